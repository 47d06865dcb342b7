/**
 * libp2p's datastore (peer store, DHT records) in memory, saved to one file in the data
 * directory every minute and when the node stops, and loaded when it starts: a restarted
 * node knows the peers it knew. One file per key (datastore-fs) measured too slow: the peer
 * store writes on every identify and ping, and an expert's frames came late enough to drop
 * it from speculative rounds (test/integration/speculative.spec.ts failed 4 runs in 5).
 *
 * File: "MLDS" v1, then per entry a u32 key length, the key (UTF-8), a u32 value length, the
 * value. Written to a temporary file and renamed (a crash leaves the previous snapshot).
 * A file that is not one, or is cut short, is ignored (the node starts with an empty store).
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import { MemoryDatastore } from 'datastore-core/memory'
import { Key } from 'interface-datastore/key'
import type { AbortOptions } from '@libp2p/interface'

const MAGIC = 'MLDS'
const VERSION = 1
/** the largest snapshot written or read (bytes); past it, only the peer store is kept */
export const MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024
/** how often a changed store is saved (ms) */
export const SNAPSHOT_INTERVAL_MS = 60_000

export class SnapshotDatastore extends MemoryDatastore {
  private dirty = false
  private timer?: NodeJS.Timeout
  private saving: Promise<void> = Promise.resolve()

  private constructor (readonly path: string) { super() }

  /** the store saved at `path` (empty when there is none, or it is unreadable) */
  static async open (path: string, intervalMs = SNAPSHOT_INTERVAL_MS): Promise<SnapshotDatastore> {
    const ds = new SnapshotDatastore(path)
    let bytes: Uint8Array | undefined
    try { bytes = await readFile(path) } catch {}
    if (bytes != null && bytes.byteLength <= MAX_SNAPSHOT_BYTES) for (const [k, v] of decodeSnapshot(bytes)) MemoryDatastore.prototype.put.call(ds, new Key(k), v)
    ds.timer = setInterval(() => { ds.save().catch(() => {}) }, intervalMs)
    ds.timer.unref()
    return ds
  }

  override put (key: Key, val: Uint8Array, options?: AbortOptions): Key | Promise<Key> {
    this.dirty = true
    return super.put(key, val, options)
  }

  override delete (key: Key, options?: AbortOptions): void | Promise<void> {
    this.dirty = true
    return super.delete(key, options)
  }

  /** writes the store when it changed since the last save (one save at a time) */
  async save (): Promise<void> {
    this.saving = this.saving.then(async () => {
      if (!this.dirty) return
      this.dirty = false
      const entries: Array<[string, Uint8Array]> = []
      for await (const { key, value } of this.query({})) entries.push([key.toString(), value])
      let bytes = encodeSnapshot(entries)
      if (bytes.byteLength > MAX_SNAPSHOT_BYTES) bytes = encodeSnapshot(entries.filter(([k]) => k.startsWith('/peers/')))
      if (bytes.byteLength > MAX_SNAPSHOT_BYTES) return
      const tmp = `${this.path}.${process.pid}.tmp`
      await writeFile(tmp, bytes)
      await rename(tmp, this.path)
    })
    await this.saving
  }

  /** stops the periodic save and saves once more */
  async close (): Promise<void> {
    clearInterval(this.timer)
    await this.save()
  }
}

export function encodeSnapshot (entries: Array<[string, Uint8Array]>): Uint8Array {
  const keys = entries.map(([k]) => Buffer.from(k, 'utf8'))
  const size = 5 + entries.reduce((n, [, v], i) => n + 8 + keys[i].byteLength + v.byteLength, 0)
  const out = Buffer.alloc(size)
  out.write(MAGIC, 0, 'latin1')
  out.writeUInt8(VERSION, 4)
  let at = 5
  entries.forEach(([, v], i) => {
    out.writeUInt32BE(keys[i].byteLength, at); at += 4
    keys[i].copy(out, at); at += keys[i].byteLength
    out.writeUInt32BE(v.byteLength, at); at += 4
    out.set(v, at); at += v.byteLength
  })
  return out
}

/** the entries of a snapshot; nothing when it is not one or is cut short */
export function decodeSnapshot (bytes: Uint8Array): Array<[string, Uint8Array]> {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.byteLength < 5 || b.toString('latin1', 0, 4) !== MAGIC || b.readUInt8(4) !== VERSION) return []
  const out: Array<[string, Uint8Array]> = []
  let at = 5
  while (at < b.byteLength) {
    if (at + 4 > b.byteLength) return []
    const kl = b.readUInt32BE(at); at += 4
    if (at + kl + 4 > b.byteLength) return []
    const k = b.toString('utf8', at, at + kl); at += kl
    const vl = b.readUInt32BE(at); at += 4
    if (at + vl > b.byteLength) return []
    out.push([k, Uint8Array.prototype.slice.call(b, at, at + vl)]); at += vl
  }
  return out
}
