/*
 * The on-disk record cache (src/router/record-cache.ts): real signed records in real files
 * under a temporary directory. Nothing read back is trusted: tampered, expired, oversized or
 * foreign entries are dropped; each mesh keeps its own records; every bound holds.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { PrivateKey } from '@libp2p/interface'
import { INFER_PROTOCOL, openExpertRecord, sealExpertRecord, type ExpertRecord } from '../../src/wire/index.js'
import { recordEnvelope } from '../../src/wire/record.js'
import { DEFAULT_CACHED_RECORDS, MAX_CACHED_MESHES, MAX_CACHED_RECORDS, MAX_MESH_NAME, RecordCache, defaultRecordCachePath, meshName } from '../../src/router/record-cache.js'

const NOW = Date.now()

async function opened (key: PrivateKey, over: Partial<ExpertRecord> = {}): Promise<ExpertRecord> {
  const r: ExpertRecord = {
    peerId: peerIdFromPrivateKey(key),
    protocol: INFER_PROTOCOL,
    modelName: 'meshtest-c',
    parameterCount: 1000,
    quantization: 'Q8_0',
    contextLength: 2048,
    tokenizerFingerprint: new Uint8Array(32).fill(1),
    tokensPerSecond: 10,
    freeSlots: 4,
    maxSlots: 4,
    seq: NOW,
    issuedAtMs: NOW,
    expiresAtMs: NOW + 600_000,
    addrs: [multiaddr('/ip4/127.0.0.1/tcp/4001')],
    ...over
  }
  return await openExpertRecord(await sealExpertRecord(r, key, { now: NOW }), { now: NOW })
}

describe('record cache (signed records across runs)', () => {
  let dir: string
  let keys: PrivateKey[]
  before(async () => { keys = await Promise.all(Array.from({ length: 6 }, async () => await generateKeyPair('Ed25519'))) })
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'meshllm-record-cache-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('save → load: the records, one per expert (its highest seq), the latest to expire first; the file is its owner\'s only', async () => {
    const path = join(dir, 'sub', 'records.json')
    const cache = new RecordCache(path)
    const a = await opened(keys[0], { expiresAtMs: NOW + 100_000 })
    const b = await opened(keys[1], { expiresAtMs: NOW + 300_000 })
    const aNewer = await opened(keys[0], { seq: NOW + 1, expiresAtMs: NOW + 200_000 })
    await cache.save([a, b, aNewer], NOW)
    assert.equal((await stat(path)).mode & 0o777, 0o600)
    const { records, rejected } = await cache.load(NOW)
    assert.equal(rejected, 0)
    assert.deepEqual(records.map(r => [r.peerId.toString(), r.seq]), [[b.peerId.toString(), NOW], [a.peerId.toString(), NOW + 1]])
    assert.ok(records.every(r => recordEnvelope(r) != null), 'a loaded record can be saved again')
  })

  it('drops what does not open: a tampered entry, one that expired since, a non-string; keeps the rest', async () => {
    const path = join(dir, 'records.json')
    const cache = new RecordCache(path, { mesh: 'm' })
    const good = await opened(keys[0])
    const soon = await opened(keys[1], { expiresAtMs: NOW + 1_000 })
    const tampered = await opened(keys[2], { expiresAtMs: NOW + 500_000 })
    await cache.save([good, soon, tampered], NOW)
    const file = JSON.parse(await readFile(path, 'utf8'))
    // saved the latest to expire first: good, tampered, soon
    const entries: string[] = file.meshes.m.records
    const bytes = Buffer.from(entries[1], 'base64')
    bytes[bytes.length - 5] ^= 1
    entries[1] = bytes.toString('base64')
    entries.push(42 as unknown as string)
    await writeFile(path, JSON.stringify(file))
    const { records, rejected } = await cache.load(NOW + 2_000)
    assert.deepEqual(records.map(r => r.peerId.toString()), [good.peerId.toString()])
    assert.equal(rejected, 3, 'the tampered, the expired and the non-string entries')
  })

  it('saves only unexpired records opened from signed bytes', async () => {
    const cache = new RecordCache(join(dir, 'records.json'))
    const good = await opened(keys[0])
    const unsigned = { ...good } // a copy: not the object openExpertRecord returned
    const expired = await opened(keys[1], { expiresAtMs: NOW + 1_000 })
    await cache.save([unsigned, expired, good], NOW + 2_000)
    assert.deepEqual((await cache.load(NOW + 2_000)).records.map(r => r.peerId.toString()), [good.peerId.toString()])
  })

  it('at most maxRecords saved (the latest to expire) and read back, whatever the file holds', async () => {
    const path = join(dir, 'records.json')
    const records = await Promise.all(keys.map(async (k, i) => await opened(k, { expiresAtMs: NOW + 100_000 * (i + 1) })))
    await new RecordCache(path, { maxRecords: 3 }).save(records, NOW)
    const three = (await new RecordCache(path, { maxRecords: 6 }).load(NOW)).records
    assert.deepEqual(three.map(r => r.peerId.toString()), records.slice(3).reverse().map(r => r.peerId.toString()))
    await new RecordCache(path, { maxRecords: 6 }).save(records, NOW)
    assert.equal((await new RecordCache(path, { maxRecords: 2 }).load(NOW)).records.length, 2, 'a file with more entries: only maxRecords are opened')
    assert.equal(new RecordCache(path).maxRecords, DEFAULT_CACHED_RECORDS)
    assert.equal(new RecordCache(path, { maxRecords: MAX_CACHED_RECORDS }).maxRecords, MAX_CACHED_RECORDS)
    assert.throws(() => new RecordCache(path, { maxRecords: MAX_CACHED_RECORDS + 1 }), RangeError)
    assert.throws(() => new RecordCache(path, { maxRecords: 0 }), RangeError)
    assert.throws(() => new RecordCache(path, { maxRecords: 1.5 }), RangeError)
  })

  it('each mesh its own records; the file keeps the MAX_CACHED_MESHES meshes saved last', async () => {
    const path = join(dir, 'records.json')
    const r = await opened(keys[0])
    const s = await opened(keys[1])
    await new RecordCache(path, { mesh: 'one' }).save([r], NOW)
    await new RecordCache(path, { mesh: 'two' }).save([s], NOW + 1)
    assert.deepEqual((await new RecordCache(path, { mesh: 'one' }).load(NOW)).records.map(x => x.peerId.toString()), [r.peerId.toString()])
    assert.deepEqual((await new RecordCache(path, { mesh: 'two' }).load(NOW)).records.map(x => x.peerId.toString()), [s.peerId.toString()])
    assert.equal((await new RecordCache(path, { mesh: 'three' }).load(NOW)).records.length, 0)
    assert.equal((await new RecordCache(path, { mesh: '__proto__' }).load(NOW)).records.length, 0, 'a mesh name is a key, never a prototype')
    for (let i = 0; i < MAX_CACHED_MESHES; i++) await new RecordCache(path, { mesh: `later-${i}` }).save([s], NOW + 10 + i)
    const meshes = Object.keys(JSON.parse(await readFile(path, 'utf8')).meshes)
    assert.equal(meshes.length, MAX_CACHED_MESHES)
    assert.ok(!meshes.includes('one') && !meshes.includes('two'), 'the meshes saved first were dropped')
    assert.throws(() => new RecordCache(path, { mesh: '' }), RangeError)
    assert.throws(() => new RecordCache(path, { mesh: 'x'.repeat(MAX_MESH_NAME + 1) }), RangeError)
    assert.equal(new RecordCache(path, { mesh: 'x'.repeat(MAX_MESH_NAME) }).mesh.length, MAX_MESH_NAME)
  })

  it('no file, garbage, another format or an oversized file: nothing loaded, no error; a save replaces it', async () => {
    const path = join(dir, 'records.json')
    const cache = new RecordCache(path)
    assert.deepEqual(await cache.load(), { records: [], rejected: 0 })
    for (const body of ['not json', '[]', 'null', JSON.stringify({ format: 'other', meshes: {} }), JSON.stringify({ format: 'meshllm-record-cache/2', meshes: [] }), JSON.stringify({ format: 'meshllm-record-cache/2', meshes: { default: { records: 'x' } } })]) {
      await writeFile(path, body)
      assert.deepEqual(await cache.load(), { records: [], rejected: 0 }, body)
    }
    await writeFile(path, Buffer.alloc(RecordCache.maxFileBytes + 1, 0x20))
    assert.deepEqual(await cache.load(), { records: [], rejected: 0 }, 'over maxFileBytes: not even read')
    const r = await opened(keys[0])
    await cache.save([r], NOW)
    assert.equal((await cache.load(NOW)).records.length, 1)
  })

  it('meshName: the same for the same bootstrap addresses in any order and governance; different otherwise', () => {
    const gov = { keyholders: [new Uint8Array([1, 2, 3])], threshold: 1 }
    assert.equal(meshName(['/ip4/1.2.3.4/tcp/1', '/ip4/5.6.7.8/tcp/2'], gov), meshName(['/ip4/5.6.7.8/tcp/2', '/ip4/1.2.3.4/tcp/1'], { keyholders: [new Uint8Array([1, 2, 3])], threshold: 1 }))
    assert.notEqual(meshName(['/ip4/1.2.3.4/tcp/1'], gov), meshName(['/ip4/1.2.3.4/tcp/2'], gov))
    assert.notEqual(meshName(['/ip4/1.2.3.4/tcp/1'], gov), meshName(['/ip4/1.2.3.4/tcp/1'], { ...gov, keyholders: [new Uint8Array([1, 2, 4])] }))
    assert.ok(meshName([], undefined).length <= MAX_MESH_NAME)
  })

  it('the default file: beside the model cache, $MESHLLM_CACHE/records.json, else $XDG_CACHE_HOME/meshllm/records.json, else ~/.cache/meshllm/records.json', () => {
    assert.equal(defaultRecordCachePath({ MESHLLM_CACHE: '/srv/cache' }), '/srv/cache/records.json')
    assert.equal(defaultRecordCachePath({ XDG_CACHE_HOME: '/c' }), '/c/meshllm/records.json')
    assert.match(defaultRecordCachePath({}), /\.cache\/meshllm\/records\.json$/)
  })
})
