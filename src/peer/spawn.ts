/**
 * A `meshllm join` process of its own: what the demo, the tests and the bench start as an
 * expert (a real process, real sockets), with a fresh data directory unless one is given.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))

export interface SpawnedExpert {
  child: ChildProcess
  addr: string
  model: string
  /** the last 8 KiB the process wrote to stderr */
  stderr: () => string
}

/** Starts `meshllm join` in a child process and resolves with its first listen address. */
export interface SpawnOptions {
  /** environment of the child (added to this process's) */
  env?: NodeJS.ProcessEnv
  /** run without --data-dir (the node then uses its default data directory) */
  defaultDataDir?: boolean
  /** listen addresses (default /ip4/127.0.0.1/tcp/0) */
  listen?: string[]
  /** where the process runs (e.g. a network namespace: test/helpers/netns.ts); default here */
  host?: { spawn: (cmd: string, args: string[], opts: import('node:child_process').SpawnOptions) => ChildProcess }
  /** resolve on the first listen address that matches (default: the first one printed) */
  addr?: (addr: string) => boolean
}

export async function spawnExpert (model: string, args: string[] = [], timeoutMs = 120_000, opts: SpawnOptions = {}): Promise<SpawnedExpert> {
  // a fresh data directory unless one is given: spawned experts never share (or leave) state
  // in the user's default directory
  const dataDir = args.includes('--data-dir') || opts.defaultDataDir === true ? [] : ['--data-dir', mkdtempSync(join(tmpdir(), 'meshllm-expert-'))]
  const listen = (opts.listen ?? ['/ip4/127.0.0.1/tcp/0']).flatMap(a => ['--listen', a])
  const argv = [BIN, 'join', '--model', model, ...listen, '--threads', '1', ...dataDir, ...args]
  const spawnOpts = { stdio: ['ignore', 'pipe', 'pipe'] as Array<'ignore' | 'pipe'>, env: { ...process.env, ...(opts.env ?? {}) } }
  const child = opts.host != null ? opts.host.spawn(process.execPath, argv, spawnOpts) : spawn(process.execPath, argv, spawnOpts)
  if (dataDir.length > 0) child.once('exit', () => { rmSync(dataDir[1], { recursive: true, force: true }) })
  let stderr = ''
  child.stderr?.on('data', (d) => { stderr += String(d); if (stderr.length > 8192) stderr = stderr.slice(-8192) })
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`expert ${model} did not start in ${timeoutMs} ms: ${stderr}`)) }, timeoutMs)
    const rl = createInterface({ input: child.stdout! })
    rl.on('line', (line) => {
      const m = /^listening (\S+)/.exec(line)
      if (m != null && (opts.addr == null || opts.addr(m[1]))) { clearTimeout(timer); resolve({ child, addr: m[1], model, stderr: () => stderr }) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`expert ${model} exited with ${code}: ${stderr.trim()}`)) })
  })
}

export async function stopExpert (e: SpawnedExpert): Promise<void> {
  if (e.child.exitCode != null || e.child.signalCode != null) return
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => { e.child.kill('SIGKILL') }, 5_000)
    e.child.once('exit', () => { clearTimeout(t); resolve() })
    e.child.kill('SIGTERM')
  })
}
