/* Expert record: signed envelope round trip, tampering, wrong signer, expiry, DHT keys. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { multiaddr } from '@multiformats/multiaddr'
import fc from 'fast-check'
import { Uint8ArrayList } from 'uint8arraylist'
import {
  ExpertRecordPayload, expertProvidersCid, expertRecordKey, isWireError, openExpertRecord, sealExpertRecord,
  selectExpertRecord, validateExpertRecordEntry, EXPERT_RECORD_DOMAIN, INFER_PROTOCOL, MAX_RECORD_BYTES
} from '../../src/wire/index.js'
import { ExpertRecord as PbExpertRecord } from '../../src/wire/pb/record.js'
import type { ExpertRecord } from '../../src/wire/index.js'
import type { PrivateKey, Record } from '@libp2p/interface'
import { runs } from '../helpers/fuzz.js'

const NOW = 1_750_000_000_000

async function rejectsNamed (p: Promise<unknown>, name: string): Promise<void> {
  await assert.rejects(p, (err: any) => {
    assert.equal(err?.name, name, `expected ${name}, got ${err?.name}: ${err?.message}`)
    return true
  })
}

function makeRecord (key: PrivateKey, over: Partial<ExpertRecord> = {}): ExpertRecord {
  return {
    peerId: peerIdFromPrivateKey(key),
    protocol: INFER_PROTOCOL,
    modelName: 'Llama-3.2-1B-Instruct-Q8_0',
    parameterCount: 1_235_814_400,
    quantization: 'Q8_0',
    contextLength: 8192,
    tokenizerFingerprint: Uint8Array.from({ length: 32 }, (_, i) => i),
    tokensPerSecond: 41.5,
    freeSlots: 3,
    maxSlots: 4,
    seq: NOW,
    issuedAtMs: NOW,
    expiresAtMs: NOW + 600_000,
    addrs: [multiaddr('/ip4/127.0.0.1/tcp/4001'), multiaddr('/ip6/::1/tcp/4002')],
    ...over
  }
}

/** a record payload with any domain/codec, to sign what sealExpertRecord refuses to */
class RawPayload implements Record {
  constructor (readonly domain: string, readonly codec: Uint8Array, private readonly bytes: Uint8Array) {}
  marshal (): Uint8Array { return this.bytes }
  equals (): boolean { return false }
}

function assertSameRecord (a: ExpertRecord, b: ExpertRecord): void {
  assert.ok(a.peerId.equals(b.peerId))
  assert.deepStrictEqual(a.addrs.map(String), b.addrs.map(String))
  const { peerId: _a, addrs: _b, ...restA } = a
  const { peerId: _c, addrs: _d, ...restB } = b
  assert.deepStrictEqual({ ...restA, tokensPerSecond: Math.fround(restA.tokensPerSecond) }, restB)
}

describe('wire: expert record', () => {
  let key: PrivateKey
  let other: PrivateKey
  before(async () => {
    key = await generateKeyPair('Ed25519')
    other = await generateKeyPair('Ed25519')
  })

  it('seals and opens a record', async () => {
    const record = makeRecord(key)
    const bytes = await sealExpertRecord(record, key)
    assert.ok(bytes.byteLength <= MAX_RECORD_BYTES)
    assertSameRecord(record, await openExpertRecord(bytes, { now: NOW + 1000 }))
    assertSameRecord(record, await openExpertRecord(new Uint8ArrayList(bytes.subarray(0, 10), bytes.subarray(10)), { now: NOW }))
    const env = await RecordEnvelope.openAndCertify(bytes, EXPERT_RECORD_DOMAIN)
    assert.deepStrictEqual([...env.payloadType], [0x03, 0x01])
  })

  it('round-trips arbitrary valid field values', async () => {
    await fc.assert(fc.asyncProperty(fc.record({
      modelName: fc.string({ maxLength: 80, unit: 'binary' }),
      quantization: fc.string({ maxLength: 10 }),
      parameterCount: fc.maxSafeNat(),
      contextLength: fc.integer({ min: 1, max: 0xffffffff }),
      tokensPerSecond: fc.float({ min: 0, max: Math.fround(1e6), noNaN: true }),
      maxSlots: fc.integer({ min: 1, max: 1000 }),
      seq: fc.maxSafeNat(),
      issuedAtMs: fc.integer({ min: 0, max: NOW })
    }), async f => {
      const record = makeRecord(key, { ...f, freeSlots: f.maxSlots, expiresAtMs: NOW + 1 })
      assertSameRecord(record, await openExpertRecord(await sealExpertRecord(record, key), { now: NOW }))
    }), { numRuns: runs(100) })
  })

  it('rejects a tampered envelope, whichever byte changes', async () => {
    const bytes = await sealExpertRecord(makeRecord(key), key)
    for (let i = 0; i < bytes.byteLength; i++) {
      for (const mask of [0x01, 0x80]) {
        const tampered = Uint8Array.from(bytes)
        tampered[i] ^= mask
        await rejectsNamed(openExpertRecord(tampered, { now: NOW }), 'InvalidRecordError')
      }
    }
    await rejectsNamed(openExpertRecord(bytes.subarray(0, bytes.byteLength - 1), { now: NOW }), 'InvalidRecordError')
  })

  it("rejects another key's envelope claiming the peer id", async () => {
    const record = makeRecord(key)
    await rejectsNamed(sealExpertRecord(record, other), 'InvalidRecordError')
    const forged = (await RecordEnvelope.seal(new ExpertRecordPayload(record), other)).marshal()
    await rejectsNamed(openExpertRecord(forged, { now: NOW }), 'InvalidRecordError')
  })

  it('rejects a wrong domain or payload type', async () => {
    const payload = new ExpertRecordPayload(makeRecord(key)).marshal()
    const wrongDomain = (await RecordEnvelope.seal(new RawPayload('libp2p-peer-record', Uint8Array.of(3, 1), payload), key)).marshal()
    await rejectsNamed(openExpertRecord(wrongDomain, { now: NOW }), 'InvalidRecordError')
    const wrongType = (await RecordEnvelope.seal(new RawPayload(EXPERT_RECORD_DOMAIN, Uint8Array.of(3, 2), payload), key)).marshal()
    await rejectsNamed(openExpertRecord(wrongType, { now: NOW }), 'InvalidRecordError')
    const garbage = (await RecordEnvelope.seal(new RawPayload(EXPERT_RECORD_DOMAIN, Uint8Array.of(3, 1), Uint8Array.of(0x0a, 0x05, 1)), key)).marshal()
    await rejectsNamed(openExpertRecord(garbage, { now: NOW }), 'InvalidRecordError')
  })

  it('rejects expired records with ExpiredRecordError and records from the future', async () => {
    const bytes = await sealExpertRecord(makeRecord(key), key)
    await rejectsNamed(openExpertRecord(bytes, { now: NOW + 600_000 }), 'ExpiredRecordError')
    await rejectsNamed(openExpertRecord(bytes, { now: NOW + 10_000_000 }), 'ExpiredRecordError')
    await openExpertRecord(bytes, { now: NOW - 60_000 }) // issued 60 s ahead: tolerated skew
    await rejectsNamed(openExpertRecord(bytes, { now: NOW - 60_001 }), 'InvalidRecordError')
  })

  it('rejects out-of-range fields, on seal and on open', async () => {
    const bad: Array<Partial<ExpertRecord>> = [
      { tokenizerFingerprint: new Uint8Array(31) },
      { contextLength: 0 },
      { maxSlots: 0, freeSlots: 0 },
      { freeSlots: 5, maxSlots: 4 },
      { tokensPerSecond: NaN },
      { tokensPerSecond: -1 },
      { tokensPerSecond: Infinity },
      { tokensPerSecond: 1e39 },
      { expiresAtMs: NOW },
      { protocol: '' },
      { addrs: Array.from({ length: 33 }, (_, i) => multiaddr(`/ip4/10.0.0.1/tcp/${i + 1}`)) }
    ]
    for (const over of bad) {
      const record = makeRecord(key, over)
      await rejectsNamed(sealExpertRecord(record, key), 'InvalidRecordError')
      const forced = (await RecordEnvelope.seal(new ExpertRecordPayload(record), key)).marshal()
      await rejectsNamed(openExpertRecord(forced, { now: NOW }), 'InvalidRecordError')
    }
    await rejectsNamed(sealExpertRecord(makeRecord(key, { seq: 2 ** 53 }), key), 'InvalidRecordError')
  })

  it('enforces the 4096-byte envelope limit', async () => {
    await rejectsNamed(sealExpertRecord(makeRecord(key, { modelName: 'x'.repeat(5000) }), key), 'OversizedMessageError')
    await rejectsNamed(openExpertRecord(new Uint8Array(MAX_RECORD_BYTES + 1)), 'OversizedMessageError')
  })

  it('never fails with anything but named errors on random bytes', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), async b => {
      try { await openExpertRecord(b, { now: NOW }) } catch (err) {
        if (!isWireError(err)) throw new Error(`unnamed error: ${String(err)}`)
      }
    }), { numRuns: runs(2000) })
  })

  it('encodes uint64 values in [2^31, 2^32) correctly (protons-runtime 8.0.1 writer bug)', async () => {
    for (const parameterCount of [2 ** 31, 3_212_749_824, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1]) {
      const record = makeRecord(key, { parameterCount, seq: parameterCount })
      assertSameRecord(record, await openExpertRecord(await sealExpertRecord(record, key), { now: NOW }))
    }
  })

  it('the hand-written encoder writes what protons writes (where protons is right)', () => {
    const r = makeRecord(key, { tokensPerSecond: 12.25, quantization: '' }) // '' and 0 values are omitted
    const viaProtons = PbExpertRecord.encode({
      ...r,
      peerId: r.peerId.toMultihash().bytes as Uint8Array<ArrayBuffer>,
      tokenizerFingerprint: r.tokenizerFingerprint as Uint8Array<ArrayBuffer>,
      parameterCount: BigInt(r.parameterCount),
      seq: BigInt(r.seq),
      issuedAtMs: BigInt(r.issuedAtMs),
      expiresAtMs: BigInt(r.expiresAtMs),
      addrs: r.addrs.map(a => a.bytes as Uint8Array<ArrayBuffer>)
    })
    assert.deepStrictEqual(new ExpertRecordPayload(r).marshal(), viaProtons)
  })

  it('ExpertRecordPayload implements Record', () => {
    const a = new ExpertRecordPayload(makeRecord(key))
    assert.equal(a.domain, 'meshllm-expert-record')
    assert.deepStrictEqual([...a.codec], [0x03, 0x01])
    assert.ok(a.equals(new ExpertRecordPayload(makeRecord(key))))
    assert.ok(!a.equals(new ExpertRecordPayload(makeRecord(key, { seq: 1 }))))
    assertSameRecord(makeRecord(key), { ...ExpertRecordPayload.decode(a.marshal()) })
  })

  it('DHT record key is "/meshllm/" + peer id multihash', () => {
    const peerId = peerIdFromPrivateKey(key)
    const k = expertRecordKey(peerId)
    assert.equal(Buffer.from(k.subarray(0, 9)).toString(), '/meshllm/')
    assert.deepStrictEqual(k.subarray(9), peerId.toMultihash().bytes)
    assert.equal(k.byteLength, 9 + 38)
  })

  it('provider CIDs are CIDv1 raw sha2-256 of "meshllm:experts:<hex>" and "meshllm:experts:all"', async () => {
    const fp = Uint8Array.from({ length: 32 }, (_, i) => i)
    const all = await expertProvidersCid()
    const mine = await expertProvidersCid(fp)
    assert.equal(all.toString(), 'bafkreibwbcyvxhhhtp5lunp3ouat5gt5ih36ns5otvwltjgj5yyxa4ziu4') // as in protocols/record.md
    assert.equal(mine.toString(), 'bafkreifjd7ofc7sojoksrz2fnhrvtwpk5xbwmq7i7je3sixrk2ibzp535q')
    const sha = (s: string): Buffer => createHash('sha256').update(s).digest()
    assert.equal(mine.version, 1)
    assert.equal(mine.code, 0x55)
    assert.deepStrictEqual(Buffer.from(mine.multihash.digest), sha(`meshllm:experts:${Buffer.from(fp).toString('hex')}`))
    assert.deepStrictEqual(Buffer.from(all.multihash.digest), sha('meshllm:experts:all'))
  })

  it('DHT validator checks the key; selector picks the highest valid seq', async () => {
    const k = expertRecordKey(peerIdFromPrivateKey(key))
    const older = await sealExpertRecord(makeRecord(key, { seq: 5 }), key)
    const newer = await sealExpertRecord(makeRecord(key, { seq: 9 }), key)
    const forged = (await RecordEnvelope.seal(new ExpertRecordPayload(makeRecord(key, { seq: 99 })), other)).marshal()
    await validateExpertRecordEntry(k, newer, { now: NOW })
    await rejectsNamed(validateExpertRecordEntry(expertRecordKey(peerIdFromPrivateKey(other)), newer, { now: NOW }), 'InvalidRecordError')
    assert.equal(await selectExpertRecord(k, [older, forged, newer], { now: NOW }), 2)
    assert.equal(await selectExpertRecord(k, [newer, older], { now: NOW }), 0)
  })
})
