/**
 * A node's data directory: its identity (peer.key), governance state, change log and task
 * store. `join` always has one: `--data-dir`, else the per-user default below, so a HALT is
 * on disk whatever the flags and a restarted node stays halted. One process per directory:
 * a lock file holds the owner's pid (a second `join` on the same directory is refused
 * instead of sharing an identity and racing on the state file).
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { errorCode } from '../util/errors.js'

/** another live process holds this data directory */
export class DataDirInUseError extends Error {
  static override name = 'DataDirInUseError'
  override name = 'DataDirInUseError'
}

/** the node's task database in its data directory: `join`'s API, and `meshllm agent` / `meshllm tasks` by default */
export function taskDbPath (dataDir: string): string {
  return join(dataDir, 'tasks.sqlite')
}

/**
 * The default data directory of `join`: $MESHLLM_HOME/node, else
 * ${XDG_DATA_HOME:-~/.local/share}/meshllm/node.
 */
export function defaultDataDir (env: NodeJS.ProcessEnv = process.env): string {
  if (env.MESHLLM_HOME != null && env.MESHLLM_HOME !== '') return join(env.MESHLLM_HOME, 'node')
  const base = env.XDG_DATA_HOME != null && env.XDG_DATA_HOME !== '' ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share')
  return join(base, 'meshllm', 'node')
}

function alive (pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return errorCode(err) === 'EPERM'
  }
}

/** the lock files this process holds */
const heldHere = new Set<string>()

/**
 * Takes the directory's lock (`<dir>/lock`, the owner's pid), creating the directory (mode
 * 700). A lock whose process is gone is taken over. Returns the release function.
 * Throws DataDirInUseError when a live process holds it.
 */
export function lockDataDir (dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const file = join(dir, 'lock')
  // two peers of one process (MeshPeer in tests, an embedding app) must not share a directory
  // either: the pid in the file cannot tell them apart, this set can
  if (heldHere.has(file)) throw new DataDirInUseError(`data directory ${dir} is in use by this process: give each peer its own data directory`)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600)
      writeSync(fd, String(process.pid))
      closeSync(fd)
      heldHere.add(file)
      let released = false
      return () => {
        if (released) return
        released = true
        heldHere.delete(file)
        try { if (readFileSync(file, 'utf8') === String(process.pid)) rmSync(file) } catch {}
      }
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw err
      let owner = NaN
      try { owner = Number(readFileSync(file, 'utf8')) } catch {}
      if (alive(owner) && owner !== process.pid) throw new DataDirInUseError(`data directory ${dir} is in use by process ${owner}: give this node its own --data-dir`)
      rmSync(file, { force: true }) // stale: its process is gone
    }
  }
  throw new DataDirInUseError(`could not lock data directory ${dir}`)
}
