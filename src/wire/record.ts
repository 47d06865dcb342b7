/**
 * The expert record (protocols/record.md): what an expert advertises on the DHT, signed inside a
 * libp2p signed envelope (domain "meshllm-expert-record", payload type 0x0301).
 */
import { RecordEnvelope } from '@libp2p/peer-record'
import { peerIdFromMultihash, peerIdFromPublicKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'
import { ExpiredRecordError, InvalidRecordError, OversizedMessageError, rethrowAs } from './errors.js'
import { ExpertRecord as PbExpertRecord } from './pb/record.js'
import { FINGERPRINT_BYTES, MAX_RECORD_BYTES } from './types.js'
import { PbWriter } from './varint.js'
import { errorMessage } from '../util/errors.js'
import type { PeerId, PrivateKey, Record } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Uint8ArrayList } from 'uint8arraylist'

export const EXPERT_RECORD_DOMAIN = 'meshllm-expert-record'
export const EXPERT_RECORD_CODEC = Uint8Array.from([0x03, 0x01])
/** most addrs a record may list */
export const MAX_RECORD_ADDRS = 32
/** issued_at_ms may be at most this far ahead of the reader's clock */
export const MAX_CLOCK_SKEW_MS = 60_000
/**
 * longest record lifetime: a reader rejects a record that expires more than this (plus
 * MAX_CLOCK_SKEW_MS) after its own clock, so no record is kept longer; publishers re-publish
 * well before expiry (protocols/record.md §3)
 */
export const MAX_RECORD_LIFETIME_MS = 3_600_000
/** DHT key prefix: the record lives under `/meshllm/` + peer id multihash bytes */
export const EXPERT_RECORD_KEY_PREFIX = '/meshllm/'

export interface ExpertRecord {
  peerId: PeerId
  /** protocol the expert serves, "/meshllm/infer/1.0.0" */
  protocol: string
  modelName: string
  parameterCount: number
  /** e.g. "Q8_0" */
  quantization: string
  contextLength: number
  /** 32 bytes (docs/tokenizer.md) */
  tokenizerFingerprint: Uint8Array
  tokensPerSecond: number
  freeSlots: number
  maxSlots: number
  /** increases with every re-publication */
  seq: number
  issuedAtMs: number
  expiresAtMs: number
  addrs: Multiaddr[]
}

const invalid = (m: string): InvalidRecordError => new InvalidRecordError(m)

function safeUint (name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw invalid(`${name} ${v} is not a non-negative safe integer`)
  return v
}

function fromUint64 (name: string, v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${name} ${v} exceeds 2^53 - 1`)
  return Number(v)
}

/** Time-independent validity rules (protocols/record.md, "Validity"). */
export function checkExpertRecord (r: ExpertRecord): void {
  if (r.tokenizerFingerprint.byteLength !== FINGERPRINT_BYTES) throw invalid('tokenizer fingerprint must be 32 bytes')
  if (r.protocol.length === 0) throw invalid('empty protocol')
  for (const [name, v] of [['contextLength', r.contextLength], ['freeSlots', r.freeSlots], ['maxSlots', r.maxSlots]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw invalid(`${name} ${v} is not a uint32`)
  }
  if (r.contextLength === 0) throw invalid('contextLength must be > 0')
  if (r.maxSlots === 0) throw invalid('maxSlots must be > 0')
  if (r.freeSlots > r.maxSlots) throw invalid(`freeSlots ${r.freeSlots} > maxSlots ${r.maxSlots}`)
  // float32 on the wire: 1e39 is finite here but infinite there
  if (!Number.isFinite(Math.fround(r.tokensPerSecond)) || r.tokensPerSecond < 0) throw invalid(`tokensPerSecond ${r.tokensPerSecond} not finite ≥ 0`)
  for (const [name, v] of [['parameterCount', r.parameterCount], ['seq', r.seq], ['issuedAtMs', r.issuedAtMs], ['expiresAtMs', r.expiresAtMs]] as const) {
    safeUint(name, v)
  }
  if (r.expiresAtMs <= r.issuedAtMs) throw invalid('expiresAtMs must be after issuedAtMs')
  if (r.addrs.length > MAX_RECORD_ADDRS) throw invalid(`more than ${MAX_RECORD_ADDRS} addrs`)
}

/** The record as the payload of a libp2p signed envelope. */
export class ExpertRecordPayload implements Record {
  static readonly DOMAIN = EXPERT_RECORD_DOMAIN
  static readonly CODEC = EXPERT_RECORD_CODEC
  readonly domain = EXPERT_RECORD_DOMAIN
  readonly codec = EXPERT_RECORD_CODEC
  private marshaled?: Uint8Array

  constructor (readonly record: ExpertRecord) {}

  /**
   * protobuf bytes of the record (proto/record.proto). Written by hand: protons-runtime 8.0.1's
   * uint64 writer corrupts values in [2^31, 2^32) (e.g. a 3B parameter_count). Its reader is fine.
   */
  marshal (): Uint8Array {
    if (this.marshaled == null) {
      const r = this.record
      const w = new PbWriter()
        .optBytes(1, r.peerId.toMultihash().bytes)
        .string(2, r.protocol)
        .string(3, r.modelName)
        .uint(4, safeUint('parameterCount', r.parameterCount))
        .string(5, r.quantization)
        .uint(6, r.contextLength)
        .optBytes(7, r.tokenizerFingerprint)
        .float(8, r.tokensPerSecond)
        .uint(9, r.freeSlots)
        .uint(10, r.maxSlots)
        .uint(11, safeUint('seq', r.seq))
        .uint(12, safeUint('issuedAtMs', r.issuedAtMs))
        .uint(13, safeUint('expiresAtMs', r.expiresAtMs))
      for (const a of r.addrs) w.bytes(14, a.bytes)
      this.marshaled = w.finish()
    }
    return this.marshaled
  }

  equals (other: Record): boolean {
    if (!(other instanceof ExpertRecordPayload)) return false
    return sameBytes(this.marshal(), other.marshal())
  }

  /** protobuf bytes → ExpertRecord (structure only: no signature, range or time checks). InvalidRecordError. */
  static decode (bytes: Uint8Array): ExpertRecord {
    return rethrowAs(invalid, () => {
      const pb = PbExpertRecord.decode(bytes, { limits: { addrs: MAX_RECORD_ADDRS } })
      return {
        peerId: peerIdFromMultihash(Digest.decode(pb.peerId)),
        protocol: pb.protocol,
        modelName: pb.modelName,
        parameterCount: fromUint64('parameterCount', pb.parameterCount),
        quantization: pb.quantization,
        contextLength: pb.contextLength,
        tokenizerFingerprint: pb.tokenizerFingerprint,
        tokensPerSecond: pb.tokensPerSecond,
        freeSlots: pb.freeSlots,
        maxSlots: pb.maxSlots,
        seq: fromUint64('seq', pb.seq),
        issuedAtMs: fromUint64('issuedAtMs', pb.issuedAtMs),
        expiresAtMs: fromUint64('expiresAtMs', pb.expiresAtMs),
        addrs: pb.addrs.map(a => multiaddr(a))
      }
    })
  }
}

/**
 * Signs `record` with `privateKey` (whose peer id must be record.peerId) and returns the
 * marshaled envelope. Throws InvalidRecordError / OversizedMessageError for what readers would reject.
 */
export async function sealExpertRecord (record: ExpertRecord, privateKey: PrivateKey, { now = Date.now() }: { now?: number } = {}): Promise<Uint8Array> {
  checkExpertRecord(record)
  checkLifetime(record, now)
  if (!peerIdFromPublicKey(privateKey.publicKey).equals(record.peerId)) throw invalid('key does not belong to record.peerId')
  const bytes = (await RecordEnvelope.seal(new ExpertRecordPayload(record), privateKey)).marshal()
  if (bytes.byteLength > MAX_RECORD_BYTES) throw new OversizedMessageError(`envelope of ${bytes.byteLength} bytes > ${MAX_RECORD_BYTES}`)
  return bytes
}

/**
 * Verifies a marshaled envelope and returns the record it carries. Throws OversizedMessageError
 * (> 4096 bytes), InvalidRecordError (envelope, signature, payload type, peer id, ranges,
 * issued more than 60 s ahead of `now`, expiring more than 1 h + 60 s after `now`) or
 * ExpiredRecordError (expires_at_ms ≤ now).
 */
export async function openExpertRecord (bytes: Uint8Array | Uint8ArrayList, { now = Date.now() }: { now?: number } = {}): Promise<ExpertRecord> {
  const buf = bytes.subarray()
  if (buf.byteLength > MAX_RECORD_BYTES) throw new OversizedMessageError(`envelope of ${buf.byteLength} bytes > ${MAX_RECORD_BYTES}`)
  let envelope: RecordEnvelope
  try {
    envelope = await RecordEnvelope.openAndCertify(buf, EXPERT_RECORD_DOMAIN)
  } catch (err) {
    throw invalid(`envelope: ${errorMessage(err)}`)
  }
  // protons ignores wire types, so some bit flips in tags decode to the same envelope:
  // accept only the canonical encoding, which makes the stored bytes non-malleable
  if (!sameBytes(envelope.marshal(), buf)) throw invalid('envelope is not canonically encoded')
  if (!sameBytes(envelope.payloadType, EXPERT_RECORD_CODEC)) throw invalid('payload type is not 0x0301')
  const record = ExpertRecordPayload.decode(envelope.payload)
  if (!peerIdFromPublicKey(envelope.publicKey).equals(record.peerId)) throw invalid('signer is not record.peerId')
  checkExpertRecord(record)
  if (record.expiresAtMs <= now) throw new ExpiredRecordError(`expired at ${record.expiresAtMs} (now ${now})`)
  if (record.issuedAtMs > now + MAX_CLOCK_SKEW_MS) throw invalid(`issued at ${record.issuedAtMs}, more than 60 s ahead of ${now}`)
  checkLifetime(record, now)
  envelopes.set(record, Uint8Array.from(buf))
  return record
}

/** the signed bytes each record openExpertRecord returned was opened from */
const envelopes = new WeakMap<ExpertRecord, Uint8Array>()

/**
 * The signed envelope `record` was opened from (openExpertRecord), to store or pass on as it
 * is: whoever reads it opens it again. Undefined for a record that was not opened from bytes.
 */
export function recordEnvelope (record: ExpertRecord): Uint8Array | undefined {
  return envelopes.get(record)
}

/** a record may not claim to stay valid more than MAX_RECORD_LIFETIME_MS (+ skew) past `now` */
function checkLifetime (record: ExpertRecord, now: number): void {
  if (record.expiresAtMs > now + MAX_RECORD_LIFETIME_MS + MAX_CLOCK_SKEW_MS) {
    throw invalid(`expires at ${record.expiresAtMs}, more than ${MAX_RECORD_LIFETIME_MS / 60_000} min (+ 60 s skew) after ${now}`)
  }
}

/** DHT key of an expert's record: UTF-8 "/meshllm/" followed by the peer id's multihash bytes */
export function expertRecordKey (peerId: PeerId): Uint8Array {
  const prefix = new TextEncoder().encode(EXPERT_RECORD_KEY_PREFIX)
  const mh = peerId.toMultihash().bytes
  const key = new Uint8Array(prefix.byteLength + mh.byteLength)
  key.set(prefix)
  key.set(mh, prefix.byteLength)
  return key
}

/**
 * Provider key experts announce: CIDv1(raw, sha256(UTF-8 "meshllm:experts:<fingerprint hex>")),
 * or of "meshllm:experts:all" when no fingerprint is given.
 */
export async function expertProvidersCid (fingerprint?: Uint8Array): Promise<CID> {
  const name = fingerprint == null
    ? 'meshllm:experts:all'
    : `meshllm:experts:${Array.from(fingerprint, b => b.toString(16).padStart(2, '0')).join('')}`
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(name)))
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i])
}

/**
 * kad-dht validator for the "meshllm" key namespace (`validators: { meshllm: validateExpertRecordEntry }`):
 * the value must open (openExpertRecord) and `key` must be expertRecordKey of its peer id.
 */
export async function validateExpertRecordEntry (key: Uint8Array, value: Uint8Array, options: { now?: number } = {}): Promise<void> {
  await openKeyedRecord(key, value, options.now)
}

async function openKeyedRecord (key: Uint8Array, value: Uint8Array, now?: number): Promise<ExpertRecord> {
  const record = await openExpertRecord(value, { now })
  if (!sameBytes(key, expertRecordKey(record.peerId))) throw invalid('DHT key does not match the record peer id')
  return record
}

/**
 * kad-dht selector for the "meshllm" namespace: index of the valid, unexpired record with the
 * highest seq (the first of equals); 0 when none is valid.
 */
export async function selectExpertRecord (key: Uint8Array, records: Uint8Array[], options: { now?: number } = {}): Promise<number> {
  let best = 0
  let bestSeq = -1
  for (let i = 0; i < records.length; i++) {
    try {
      const { seq } = await openKeyedRecord(key, records[i], options.now)
      if (seq > bestSeq) { best = i; bestSeq = seq }
    } catch {} // invalid records never win
  }
  return best
}
