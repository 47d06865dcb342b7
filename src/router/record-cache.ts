/**
 * An on-disk cache of signed expert records across runs (RouterOptions.recordCache). A fresh
 * `meshllm generate` process knows nobody: without it, its first token waits for a DHT
 * provider lookup, a dial to each expert and a record fetch. With it, the router dials the
 * experts an earlier run found while that lookup runs, and uses each one it reaches at once:
 * the record is signed by the expert and unexpired, and the connection's handshake proves the
 * peer id (Router.experts).
 *
 * Records are kept per mesh (RecordCacheInit.mesh: the CLI names a mesh by its bootstrap
 * addresses and governance), so that a router never dials into another mesh's experts; the
 * file holds the MAX_CACHED_MESHES meshes saved last.
 *
 * Nothing in the file is trusted: every record is opened as if it came from the DHT
 * (openExpertRecord: signature, canonical encoding, bounds, expiry); a file that is not the
 * format, or larger than its bounds allow, is ignored as a whole (a cache only ever saves
 * time). Writes replace the file atomically (a temporary file renamed over it), readable by
 * its owner only.
 */
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { homedir } from 'node:os'
import { createHash } from 'node:crypto'
import { openExpertRecord, recordEnvelope, type ExpertRecord } from '../wire/record.js'
import { MAX_RECORD_BYTES } from '../wire/types.js'

/** RecordCacheInit.maxRecords' default: records saved at most (the newest to expire first) */
export const DEFAULT_CACHED_RECORDS = 64
/** at most this many records per mesh, whatever the caller asks */
export const MAX_CACHED_RECORDS = 1024
/** meshes the file keeps (the ones saved last) */
export const MAX_CACHED_MESHES = 8
/** a mesh's name in the file: at most this many characters */
export const MAX_MESH_NAME = 128
const FORMAT = 'meshllm-record-cache/2'

export interface RecordCacheInit {
  /** records saved and loaded at most (default DEFAULT_CACHED_RECORDS, at most MAX_CACHED_RECORDS) */
  maxRecords?: number
  /** the mesh these records belong to (default 'default'; at most MAX_MESH_NAME characters) */
  mesh?: string
}

interface CacheFile { format: string, meshes: Record<string, { savedAtMs: number, records: string[] }> }

/** what load() found in the file */
export interface LoadedRecords {
  records: ExpertRecord[]
  /** entries that did not open (bad signature or encoding, expired, over a bound) */
  rejected: number
}

/**
 * The cache file of `meshllm generate` (--record-cache), beside the model cache:
 * $MESHLLM_CACHE/records.json, else ${XDG_CACHE_HOME}/meshllm/records.json, else
 * ~/.cache/meshllm/records.json.
 */
export function defaultRecordCachePath (env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.MESHLLM_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'meshllm')
  return join(dir, 'records.json')
}

/**
 * The name of a mesh in a record cache: a digest of how a router reaches and governs it (its
 * bootstrap addresses, in any order, and its governance configuration).
 */
export function meshName (bootstrap: readonly string[], governance: unknown): string {
  const h = createHash('sha256')
  h.update(JSON.stringify([[...bootstrap].sort(), governance ?? null], (_k, v) => v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v))
  return h.digest('hex').slice(0, 32)
}

export class RecordCache {
  readonly maxRecords: number
  readonly mesh: string
  /** the longest file load() reads: MAX_CACHED_MESHES meshes of MAX_CACHED_RECORDS envelopes in base64, and their JSON */
  static readonly maxFileBytes = 4096 + MAX_CACHED_MESHES * (MAX_MESH_NAME + 64 + MAX_CACHED_RECORDS * (Math.ceil(MAX_RECORD_BYTES / 3) * 4 + 4))

  constructor (readonly path: string, init: RecordCacheInit = {}) {
    const n = init.maxRecords ?? DEFAULT_CACHED_RECORDS
    if (!Number.isInteger(n) || n < 1 || n > MAX_CACHED_RECORDS) throw new RangeError(`maxRecords ${n}: an integer in [1, ${MAX_CACHED_RECORDS}]`)
    const mesh = init.mesh ?? 'default'
    if (mesh.length === 0 || mesh.length > MAX_MESH_NAME) throw new RangeError(`mesh name of ${mesh.length} characters: 1 to ${MAX_MESH_NAME}`)
    this.maxRecords = n
    this.mesh = mesh
  }

  /** the file's meshes, or none when there is no file or it is not one this cache wrote */
  private async read (): Promise<CacheFile['meshes']> {
    try {
      if ((await stat(this.path)).size > RecordCache.maxFileBytes) return {}
      const parsed = JSON.parse(await readFile(this.path, 'utf8'))
      if (parsed?.format !== FORMAT || typeof parsed.meshes !== 'object' || parsed.meshes == null || Array.isArray(parsed.meshes)) return {}
      return parsed.meshes
    } catch {
      return {}
    }
  }

  /**
   * The valid records of the file, one per expert (its highest seq), the latest to expire
   * first; none when there is no file or it is not one this cache wrote (never an error).
   */
  async load (now = Date.now()): Promise<LoadedRecords> {
    const meshes = await this.read()
    const entries = Object.hasOwn(meshes, this.mesh) ? meshes[this.mesh]?.records : undefined
    if (!Array.isArray(entries)) return { records: [], rejected: 0 }
    const best = new Map<string, ExpertRecord>()
    let rejected = 0
    for (const entry of entries.slice(0, this.maxRecords)) {
      try {
        if (typeof entry !== 'string') throw new TypeError('not a string')
        const r = await openExpertRecord(Buffer.from(entry, 'base64'), { now })
        const id = r.peerId.toString()
        const had = best.get(id)
        if (had == null || r.seq > had.seq) best.set(id, r)
      } catch {
        rejected++
      }
    }
    return { records: [...best.values()].sort((a, b) => b.expiresAtMs - a.expiresAtMs), rejected }
  }

  /**
   * Replaces this mesh's records in the file with `records` that came from signed bytes and
   * are unexpired (the latest to expire first, at most maxRecords); keeps the other meshes
   * saved last (MAX_CACHED_MESHES in all).
   */
  async save (records: ExpertRecord[], now = Date.now()): Promise<void> {
    const keep = records.filter(r => r.expiresAtMs > now && recordEnvelope(r) != null)
      .sort((a, b) => b.expiresAtMs - a.expiresAtMs)
      .slice(0, this.maxRecords)
    const meshes = await this.read()
    const others = Object.entries(meshes)
      .filter(([name, m]) => name !== this.mesh && name.length <= MAX_MESH_NAME && typeof m?.savedAtMs === 'number' && Array.isArray(m.records))
      .sort(([, a], [, b]) => b.savedAtMs - a.savedAtMs)
      .slice(0, MAX_CACHED_MESHES - 1)
      .map(([name, m]) => [name, { savedAtMs: m.savedAtMs, records: m.records.filter(x => typeof x === 'string').slice(0, MAX_CACHED_RECORDS) }] as const)
    const file: CacheFile = {
      format: FORMAT,
      meshes: Object.fromEntries([[this.mesh, { savedAtMs: now, records: keep.map(r => Buffer.from(recordEnvelope(r) as Uint8Array).toString('base64')) }], ...others])
    }
    const body = JSON.stringify(file)
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 })
    const tmp = `${this.path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
    try {
      await writeFile(tmp, body, { mode: 0o600 })
      await rename(tmp, this.path)
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw err
    }
  }
}
