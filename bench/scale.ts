/**
 * `npm run bench:scale` — what one node costs as the mesh grows (issue 13), written to
 * bench/scale.json and bench/scale.svg. Never part of `npm test` (test/integration/scale.spec.ts
 * runs a 30-peer version of the same harness).
 *
 * For each mesh size (--sizes 3,10,30,100,300): a mesh of real meshllm peers (bench/scale-mesh.ts:
 * processes of bench/scale-host.ts, 50 complete peers each sharing one loaded meshtest-c), then
 *  1. idle: after --settle-s seconds (150: past the connection budget's first trims), the
 *     processes' CPU time over --idle-s seconds, per peer (% of one core), RSS per peer, and
 *     connections, routing table and gossipsub peers per peer;
 *  2. cold generate: `meshllm generate --max-tokens 1 --k 3 --json` in a new process against
 *     one bootstrap peer: the router's elapsedMs and the whole command's wall time (--runs);
 *  3. status: `meshllm status --json`: wall time and how many experts it saw;
 *  4. DHT: every peer's expert record looked up by the peers of another process (success %);
 *  5. HALT: `meshllm halt` against one peer; when each peer applied it (first → last, and
 *     command start → last), then a 2-of-3 RESUME;
 *  6. partition: the last process's peers (the last third of a one-process mesh) cut off from
 *     the rest for --partition-s (each side's connection gater refuses the other, connections
 *     hung up); a HALT issued on the other side; whether it leaked across, and how long after
 *     the partition healed the cut-off peers had it (first, last); then a RESUME.
 * Options: --sizes, --per-process 50, --settle-s 150, --idle-s 60, --runs 3, --partition-s 30,
 * --only idle,generate,status,dht,halt,partition, --out bench/scale.json
 * (the chart goes beside it: bench/scale.svg)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ScaleMesh, meshllm, type CpuSample } from './scale-mesh.js'
import { renderScaleChart, type ScaleRow } from './scale-chart.js'
import { GOVERNANCE_RESYNC_MS } from '../src/node/periodic.js'

const args = process.argv.slice(2)
const opt = (name: string, d: string): string => args.includes(name) ? args[args.indexOf(name) + 1] : d
const SIZES = opt('--sizes', '3,10,30,100,300').split(',').map(Number)
const PER_PROCESS = Number(opt('--per-process', '50'))
// past the connection budget's 2 min: the idle state a long-running mesh is in
const SETTLE_S = Number(opt('--settle-s', '150'))
const IDLE_S = Number(opt('--idle-s', '60'))
const RUNS = Number(opt('--runs', '3'))
const ONLY = new Set(opt('--only', 'idle,generate,status,dht,halt,partition').split(','))
const PARTITION_MS = Number(opt('--partition-s', '30')) * 1000
// two re-sync rounds (GOVERNANCE_RESYNC_MS) and some
const CATCH_UP_WAIT_MS = 3 * GOVERNANCE_RESYNC_MS
const OUT = opt('--out', fileURLToPath(new URL('../../bench/scale.json', import.meta.url)))
const CHART = OUT.replace(/\.json$/, '.svg')
const log = (s: string): void => { process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`) }
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const cpuOf = (s: CpuSample[]): number => s.reduce((n, x) => n + x.user + x.system, 0)

/** connections, streams, routing table and gossipsub peers per node, from the hosts' sums */
function perNode (stats: Array<Record<string, number>>, n: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const k of ['connections', 'streams', 'routingTable', 'pubsubPeers']) out[k] = round(stats.reduce((x, s) => x + (s[k] ?? 0), 0) / n, 1)
  return out
}

async function measure (n: number, dir: string): Promise<Record<string, unknown>> {
  const t0 = performance.now()
  const mesh = await ScaleMesh.start({ nodes: n, perProcess: PER_PROCESS, dir, log })
  const result: Record<string, unknown> = { nodes: n, processes: mesh.hosts.length, startS: round((performance.now() - t0) / 1000) }
  try {
    if (ONLY.has('idle')) {
      await sleep(SETTLE_S * 1000)
      const a = await mesh.cpu(); const w0 = performance.now()
      await sleep(IDLE_S * 1000)
      const b = await mesh.cpu(); const wall = performance.now() - w0
      const pct = (cpuOf(b) - cpuOf(a)) / 1000 / wall * 100
      const rss = b.reduce((x, s) => x + s.rss, 0)
      result.idle = { seconds: round(wall / 1000), cpuPercentPerNode: round(pct / n, 3), cpuPercentAll: round(pct, 1), rssMiBPerNode: round(rss / n / 2 ** 20, 1), loadavg1: round(loadavg()[0], 2), perNode: perNode(await mesh.stats(), n) }
      log(`${n} peers idle: ${round(pct / n, 3)} % of a core per peer (${round(pct, 1)} % in all), ${round(rss / n / 2 ** 20, 1)} MiB RSS per peer`)
    }
    if (ONLY.has('generate')) {
      const runs = []
      for (let i = 0; i < RUNS; i++) {
        const via = mesh.addrs[Math.floor(Math.random() * mesh.addrs.length)]
        const r = await meshllm(['generate', '--bootstrap', via, '--governance', mesh.governance.file, '--max-tokens', '1', '--k', '3', '--json', 'The kernel'])
        let j: { elapsedMs?: number, effectiveK?: number } = {}
        try { j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') } catch {}
        runs.push({ code: r.code, elapsedMs: j.elapsedMs, effectiveK: j.effectiveK, wallMs: r.wallMs, error: r.code !== 0 ? r.stderr.slice(-300) : undefined })
        log(`${n} peers generate: ${JSON.stringify(runs[runs.length - 1])}`)
      }
      const ok = runs.filter(r => r.code === 0)
      result.generate = { runs, medianElapsedMs: ok.length > 0 ? median(ok.map(r => r.elapsedMs ?? 0)) : null, medianWallMs: ok.length > 0 ? median(ok.map(r => r.wallMs)) : null }
    }
    if (ONLY.has('status')) {
      const r = await meshllm(['status', '--bootstrap', mesh.bootstrap, '--json'])
      let j: { seen?: number, experts?: unknown[], missing?: unknown[], phasesMs?: unknown } = {}
      try { j = JSON.parse(r.stdout) } catch {}
      result.status = { code: r.code, wallMs: r.wallMs, seen: j.seen, records: j.experts?.length, missing: j.missing?.length, phasesMs: j.phasesMs }
      log(`${n} peers status: ${JSON.stringify(result.status)}`)
    }
    if (ONLY.has('dht')) {
      const from = mesh.hosts.length > 1 ? 1 : 0
      const r = await mesh.lookup(from, mesh.peerIds)
      result.dht = { asked: r.asked, found: r.found, percent: round(100 * r.found / r.asked, 2), ms: r.ms, firstValueMs: r.firstValueMs }
      log(`${n} peers DHT: ${r.found}/${r.asked} records found in ${r.ms} ms`)
    }
    if (ONLY.has('halt')) {
      const target = mesh.addrs[mesh.addrs.length - 1]
      const start = Date.now()
      const h = await meshllm(['halt', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[0], '--reason', 'scale bench', '--bootstrap', target, '--json'])
      const times = await mesh.waitHalts(t => t.every(x => x != null), 30_000)
      const got = times.filter((t): t is number => t != null)
      result.halt = { code: h.code, reached: got.length, of: n, firstToLastMs: got.length > 0 ? Math.max(...got) - Math.min(...got) : null, commandStartToLastMs: got.length > 0 ? Math.max(...got) - start : null, commandMs: h.wallMs }
      log(`${n} peers HALT: ${JSON.stringify(result.halt)}`)
      const res = await meshllm(['resume', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[1], '--key', mesh.governance.keyFiles[2], '--bootstrap', target])
      if (res.code !== 0) log(`resume failed: ${res.stderr.slice(-300)}`)
    }
    if (ONLY.has('partition')) {
      // the last process's peers (the last third in a one-process mesh) cut off for PARTITION_MS;
      // a HALT issued on the other side meanwhile; when did the cut-off side have it after healing
      const ids = mesh.peerIds
      const cut = mesh.hosts.length > 1 ? ids.length - mesh.hosts[mesh.hosts.length - 1].addrs.length : ids.length - Math.max(1, Math.floor(ids.length / 3))
      const healAt = Date.now() + PARTITION_MS
      const closed = await mesh.partition(ids.slice(0, cut), ids.slice(cut), PARTITION_MS)
      const h = await meshllm(['halt', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[0], '--reason', 'partition', '--bootstrap', mesh.addrs[0], '--json'])
      let times = await mesh.waitHalts(t => t.slice(0, cut).every(x => x != null), healAt - 1_000 - Date.now())
      const leaked = times.slice(cut).filter(t => t != null).length
      await sleep(Math.max(0, healAt - Date.now()))
      times = await mesh.waitHalts(t => t.every(x => x != null), CATCH_UP_WAIT_MS)
      const late = times.slice(cut).filter((t): t is number => t != null)
      result.partition = { code: h.code, cutOff: ids.length - cut, connectionsCut: closed, partitionMs: PARTITION_MS, leaked, caughtUp: late.length, healToFirstMs: late.length > 0 ? Math.min(...late) - healAt : null, healToLastMs: late.length === ids.length - cut ? Math.max(...late) - healAt : null }
      log(`${n} peers partition: ${JSON.stringify(result.partition)}`)
      const res = await meshllm(['resume', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[1], '--key', mesh.governance.keyFiles[2], '--bootstrap', mesh.addrs[0]])
      if (res.code !== 0) log(`resume failed: ${res.stderr.slice(-300)}`)
    }
  } finally {
    await mesh.stop()
  }
  return result
}

const results: Array<Record<string, unknown>> = []
for (const n of SIZES) {
  const dir = await mkdtemp(join(tmpdir(), `meshllm-scale-${n}-`))
  try {
    results.push(await measure(n, dir))
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? '?'}`
  await writeFile(OUT, JSON.stringify({ date: new Date().toISOString(), machine, perProcess: PER_PROCESS, settleS: SETTLE_S, idleS: IDLE_S, results }, null, 2) + '\n')
  await writeFile(CHART, renderScaleChart(results as unknown as ScaleRow[], machine))
}
log(`written ${OUT} and ${CHART}`)
