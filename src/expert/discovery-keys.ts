/**
 * DHT keys for expert discovery (spec: protocols/record.md).
 * - provider keys: CIDv1(raw, sha256("meshllm:experts:<fingerprint hex>")) and "meshllm:experts:all"
 * - record key: "/meshllm/" + peer id multihash bytes → signed expert record envelope
 */
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import type { PeerId } from '@libp2p/interface'
import { openExpertRecord } from '../wire/record.js'

export const DHT_NAMESPACE = 'meshllm'
const PREFIX = new TextEncoder().encode(`/${DHT_NAMESPACE}/`)

export async function providerKey (fingerprintHex: string | 'all'): Promise<CID> {
  const digest = await sha256.digest(new TextEncoder().encode(`meshllm:experts:${fingerprintHex}`))
  return CID.createV1(raw.code, digest)
}

export function recordKey (peerId: PeerId): Uint8Array {
  const mh = peerId.toMultihash().bytes
  const key = new Uint8Array(PREFIX.length + mh.length)
  key.set(PREFIX, 0)
  key.set(mh, PREFIX.length)
  return key
}

export function peerIdFromRecordKey (key: Uint8Array): PeerId {
  for (let i = 0; i < PREFIX.length; i++) {
    if (key[i] !== PREFIX[i]) throw new Error('not a meshllm record key')
  }
  return peerIdFromMultihash(Digest.decode(key.subarray(PREFIX.length)))
}

/** kad-dht validator: the value must be a valid, unexpired record signed by the key's peer. */
export async function expertRecordValidator (key: Uint8Array, value: Uint8Array): Promise<void> {
  const peerId = peerIdFromRecordKey(key)
  const record = await openExpertRecord(value)
  if (!record.peerId.equals(peerId)) throw new Error('expert record stored under another peer id')
}

/** kad-dht selector: the valid record with the highest seq wins. */
export async function expertRecordSelector (_key: Uint8Array, records: Uint8Array[]): Promise<number> {
  let best = 0
  let bestSeq = -1
  for (let i = 0; i < records.length; i++) {
    try {
      const r = await openExpertRecord(records[i])
      if (r.seq > bestSeq) { best = i; bestSeq = r.seq }
    } catch {}
  }
  return best
}
