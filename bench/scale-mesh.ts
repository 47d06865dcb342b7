/**
 * A mesh of many real meshllm peers on one machine, spread over processes of
 * bench/scale-host.ts (each hosting many complete peers that share one loaded model): what
 * `npm run bench:scale` measures and what test/integration/scale.spec.ts checks.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { configToJson, defaultThresholds, type GovernanceConfig } from '../src/governance/config.js'
import { generateKeyholderKey } from '../src/governance/keys.js'

const HOST_SCRIPT = fileURLToPath(new URL('./scale-host.js', import.meta.url))
export const MESHLLM_BIN = fileURLToPath(new URL('../../bin/meshllm.js', import.meta.url))

interface HostProcess {
  child: ChildProcess
  addrs: string[]
  startMs: number
  /** replies, in order, to the commands sent (one at a time per process) */
  queue: Promise<unknown>
  waiters: Array<(o: unknown) => void>
}

export interface ScaleMeshOptions {
  nodes: number
  /** peers per host process (default 50) */
  perProcess?: number
  /** working directory (data directories, governance file, keys) */
  dir: string
  /** model every peer serves (default meshtest-c) */
  model?: string
  /** sessions of each process's shared model (default 8) */
  sessions?: number
  log?: (s: string) => void
}

export interface CpuSample { user: number, system: number, rss: number, heapUsed: number, peers: number }

/** a mesh's governance: three keyholders (HALT by one, RESUME by two) */
export interface ScaleGovernance { file: string, keyFiles: string[], config: GovernanceConfig }

export async function scaleGovernance (dir: string): Promise<ScaleGovernance> {
  const keyFiles = [0, 1, 2].map(i => join(dir, `k${i}.key`))
  const keys = await Promise.all(keyFiles.map(async f => (await generateKeyholderKey(f)).privateKey))
  const config: GovernanceConfig = { meshId: `scale-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 }
  const file = join(dir, 'governance.json')
  await writeFile(file, JSON.stringify(configToJson(config)))
  return { file, keyFiles, config }
}

export class ScaleMesh {
  readonly hosts: HostProcess[] = []
  private constructor (readonly governance: ScaleGovernance, private readonly opts: ScaleMeshOptions) {}

  /** every peer's first multiaddr, host by host */
  get addrs (): string[] { return this.hosts.flatMap(h => h.addrs) }
  get peerIds (): string[] { return this.addrs.map(a => a.split('/p2p/')[1]) }
  get bootstrap (): string { return this.hosts[0].addrs[0] }

  /** `n` distinct peers' addresses at random */
  randomAddrs (n: number): string[] {
    const all = [...this.addrs]
    for (let i = all.length - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [all[i], all[j]] = [all[j], all[i]] }
    return all.slice(0, n)
  }

  static async start (opts: ScaleMeshOptions): Promise<ScaleMesh> {
    const mesh = new ScaleMesh(await scaleGovernance(opts.dir), opts)
    try {
      const per = opts.perProcess ?? 50
      const counts: number[] = []
      for (let left = opts.nodes; left > 0; left -= per) counts.push(Math.min(per, left))
      // the first process's first peer bootstraps the first process; later processes join
      // through three random peers of those already up (one bootstrap peer for 300 joiners
      // is a hot spot no real mesh has: at 300 on 2 cores it timed out joiners), two at a time
      await mesh.spawnHost(counts[0], [], 0)
      for (let i = 1; i < counts.length; i += 2) {
        await Promise.all(counts.slice(i, i + 2).map(async (n, j) => { await mesh.spawnHost(n, mesh.randomAddrs(3), i + j) }))
      }
    } catch (err) {
      await mesh.stop()
      throw err
    }
    return mesh
  }

  private async spawnHost (nodes: number, bootstrap: string[], index: number): Promise<void> {
    const o = this.opts
    const args = [HOST_SCRIPT, '--nodes', String(nodes), '--governance', this.governance.file, '--dir', join(o.dir, `h${index}`),
      '--model', o.model ?? 'meshtest-c', '--sessions', String(o.sessions ?? 8), ...bootstrap.flatMap(b => ['--bootstrap', b])]
    // as bin/meshllm.js does: no isatty(2) per libp2p logger
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, DEBUG_COLORS: process.env.DEBUG_COLORS ?? '0' } })
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
    const h: HostProcess = { child, addrs: [], startMs: 0, queue: Promise.resolve(), waiters: [] }
    this.hosts.push(h)
    const ready = new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => { reject(new Error(`scale host ${index} exited (${code}) before it was ready: ${stderr}`)) })
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        let o: { ready?: boolean, addrs?: string[], startMs?: number }
        try { o = JSON.parse(line) } catch { return }
        if (o.ready === true) { h.addrs = o.addrs ?? []; h.startMs = o.startMs ?? 0; resolve(); return }
        h.waiters.shift()?.(o)
      })
    })
    await ready
    this.opts.log?.(`host ${index}: ${nodes} peers in ${h.startMs} ms`)
  }

  /** sends a command to one host process and resolves with its reply */
  async ask<T> (host: number, cmd: object): Promise<T> {
    const h = this.hosts[host]
    const reply = h.queue.then(async () => await new Promise<unknown>((resolve) => {
      h.waiters.push(resolve)
      h.child.stdin?.write(JSON.stringify(cmd) + '\n')
    }))
    h.queue = reply.catch(() => {})
    return await reply as T
  }

  async cpu (): Promise<CpuSample[]> {
    return await Promise.all(this.hosts.map(async (_, i) => await this.ask<CpuSample>(i, { cmd: 'cpu' })))
  }

  /** per peer (in `addrs` order): when it applied a HALT (ms since epoch), or null */
  async halts (): Promise<Array<number | null>> {
    const r = await Promise.all(this.hosts.map(async (_, i) => await this.ask<{ halts: Array<number | null> }>(i, { cmd: 'halts' })))
    return r.flatMap(x => x.halts)
  }

  /** polls halts() every 250 ms until `until` holds or `ms` have passed; the last answer */
  async waitHalts (until: (halts: Array<number | null>) => boolean, ms: number): Promise<Array<number | null>> {
    const end = Date.now() + ms
    let h = await this.halts()
    while (!until(h) && Date.now() < end) {
      await new Promise(resolve => setTimeout(resolve, 250))
      h = await this.halts()
    }
    return h
  }

  async stats (): Promise<Array<Record<string, number>>> {
    return await Promise.all(this.hosts.map(async (_, i) => await this.ask<Record<string, number>>(i, { cmd: 'stats' })))
  }

  /** the peers of host `host` fetch the given experts' DHT records */
  async lookup (host: number, peers: string[]): Promise<{ asked: number, found: number, missing: string[], ms: number, firstValueMs: { p50: number, p95: number } | null }> {
    return await this.ask(host, { cmd: 'lookup', peers })
  }

  /** a network partition between peer sets a and b (peer ids) for ms, then it heals; how many connections were cut */
  async partition (a: string[], b: string[], ms: number): Promise<number> {
    const r = await Promise.all(this.hosts.map(async (_, i) => await this.ask<{ closed: number }>(i, { cmd: 'partition', a, b, ms })))
    return r.reduce((n, x) => n + x.closed, 0)
  }

  async stop (): Promise<void> {
    await Promise.all(this.hosts.map(async (h, i) => {
      if (h.child.exitCode != null) return
      const exited = new Promise<void>(resolve => { h.child.once('exit', () => { resolve() }) })
      const t = setTimeout(() => { h.child.kill('SIGKILL') }, 20_000)
      await Promise.race([this.ask(i, { cmd: 'stop' }).catch(() => {}), exited])
      await exited
      clearTimeout(t)
    }))
  }
}

export interface CliResult { code: number, stdout: string, stderr: string, wallMs: number }

/** runs `meshllm <args>` as its own process */
export async function meshllm (args: string[], timeoutMs = 120_000): Promise<CliResult> {
  const start = performance.now()
  return await new Promise((resolve) => {
    execFile(process.execPath, [MESHLLM_BIN, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err == null ? 0 : (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1)
      resolve({ code, stdout, stderr, wallMs: Math.round(performance.now() - start) })
    })
  })
}
