/**
 * `npm run bench:concurrency` — many users at once (issue "Speed II" §3), written to
 * bench/concurrency.json and bench/concurrency.svg. Never part of `npm test`.
 *
 * Four `meshllm join` expert processes (meshtest-c, one thread, the default sessions ('auto':
 * 16 for this model) and 2 per peer), each behind a delay proxy (one-way latency on every byte, both directions; the
 * experts announce the proxied address). The first of them also serves the OpenAI API
 * (`--http`): its own expert is one of the four. At each level n of concurrency:
 *   - `api`: n streamed completions at once through that node's OpenAI API (K = 4);
 *   - `routers`: n separate router peers (each its own libp2p node and peer id, in this
 *     process, sharing one tokenizer) generating at once (K = 4).
 * Per level: aggregate tokens/s (all tokens / wall time), completed and failed generations
 * (by error), time to first token and inter-token latency (p50, p95).
 *
 * Before that, in this process: does one expert batch its sessions' steps into one decode?
 * One ModelHost (meshtest-c, one thread), 1, 4 and 16 sessions each asking for the next
 * frame at once: milliseconds per round and per session (node-llama-cpp decodes the
 * sequences of one context that are pending together as one batch).
 *
 * After the levels, time to first token at --ttft-latency (default 100 ms one way): warm, one
 * completion through the running node's API (median of 5); cold, a fresh `meshllm generate
 * --bootstrap <the API node> -k 4` process (median of 3): its `ttftMs` (from the generate call:
 * bootstrap dial, DHT lookups, record fetches, K dials and opens, prefill) and the whole
 * process (Node start, the tokenizer and local model loads included); without a record cache
 * (--record-cache none), then with one that an earlier run filled.
 *
 * Options: --levels 1,4,16,64  --tokens 24  --latency 50  --modes api,routers
 *          --max-sessions <n> (the experts' slots; default theirs: auto)
 *          --max-sessions-per-peer <n> (the experts' per-peer quota; default theirs: 2)
 *          --out <name> (bench/<name>.json and .svg; default concurrency)
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { readFileSync } from 'node:fs'
import os, { tmpdir } from 'node:os'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../src/node/node.js'
import { Router } from '../src/router/router.js'
import { RouterTokenizer } from '../src/router/tokenizer.js'
import { startDelayProxy, freePort, type DelayProxy } from './delay-proxy.js'
import { ModelHost } from '../src/expert/model-host.js'
import { resolveModel } from '../src/expert/resolve.js'
import type { ExpertRecord } from '../src/wire/record.js'

const args = process.argv.slice(2)
const opt = (name: string): string | undefined => args.includes(name) ? args[args.indexOf(name) + 1] : undefined
const levels = (opt('--levels') ?? '1,4,16,64').split(',').map(Number)
const maxTokens = Number(opt('--tokens') ?? 24)
const latencyMs = Number(opt('--latency') ?? 50)
const modes = (opt('--modes') ?? 'api,routers').split(',') as Array<'api' | 'routers'>
const perPeer = opt('--max-sessions-per-peer')
const maxSessions = opt('--max-sessions')
const ttftLatencyMs = Number(opt('--ttft-latency') ?? 100)
const BIN = fileURLToPath(new URL('../../bin/meshllm.js', import.meta.url))
const K = 4
const log = (s: string): void => { process.stdout.write(s + '\n') }
const quantile = (xs: number[], q: number): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

/** one generation as its user saw it */
interface Outcome { ok: boolean, error?: string, tokens: number, ttftMs?: number, gapsMs: number[] }

interface Level {
  mode: 'api' | 'routers'
  concurrency: number
  wallMs: number
  completed: number
  failed: number
  errors: Record<string, number>
  tokens: number
  aggregateTokensPerSecond: number
  /** aggregate tokens/s over that of one generation alone */
  speedup?: number
  ttftMsP50: number
  ttftMsP95: number
  interTokenMsP50: number
  interTokenMsP95: number
}

function summarise (mode: Level['mode'], concurrency: number, wallMs: number, outcomes: Outcome[]): Level {
  const errors: Record<string, number> = {}
  for (const o of outcomes) if (!o.ok) errors[o.error ?? 'Error'] = (errors[o.error ?? 'Error'] ?? 0) + 1
  const tokens = outcomes.reduce((a, o) => a + o.tokens, 0)
  const gaps = outcomes.flatMap(o => o.gapsMs)
  const ttfts = outcomes.flatMap(o => o.ttftMs !== undefined ? [o.ttftMs] : [])
  return {
    mode,
    concurrency,
    wallMs: Math.round(wallMs),
    completed: outcomes.filter(o => o.ok).length,
    failed: outcomes.filter(o => !o.ok).length,
    errors,
    tokens,
    aggregateTokensPerSecond: tokens / (wallMs / 1000),
    ttftMsP50: quantile(ttfts, 0.5),
    ttftMsP95: quantile(ttfts, 0.95),
    interTokenMsP50: quantile(gaps, 0.5),
    interTokenMsP95: quantile(gaps, 0.95)
  }
}

/** one streamed completion through the OpenAI API: token times from the SSE chunks */
async function viaApi (base: string, seed: number): Promise<Outcome> {
  const t0 = performance.now()
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'meshllm', prompt: 'The kernel', max_tokens: maxTokens, temperature: 0.8, seed, k: K, stream: true, stream_options: { include_usage: true } }),
    signal: AbortSignal.timeout(600_000)
  })
  if (!res.ok || res.body == null) {
    const body = await res.text().catch(() => '')
    let code = `HTTP ${res.status}`
    try { code += ` ${JSON.parse(body).error.code as string}` } catch {}
    return { ok: false, error: code, tokens: 0, gapsMs: [] }
  }
  const times: number[] = []
  let tokens = 0
  let error: string | undefined
  let buf = ''
  const decoder = new TextDecoder()
  for await (const chunk of res.body) {
    const now = performance.now()
    buf += decoder.decode(chunk, { stream: true })
    let end
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, end)
      buf = buf.slice(end + 2)
      const data = event.split('\n').find(l => l.startsWith('data: '))?.slice(6)
      if (data == null || data === '[DONE]') continue
      const ev = JSON.parse(data)
      if (ev.error != null) error = String(ev.error.code ?? ev.error.type)
      else if (ev.usage != null) tokens = ev.usage.completion_tokens
      else if (ev.choices?.[0]?.text != null && ev.choices[0].text !== '') times.push(now)
    }
  }
  const gapsMs = times.slice(1).map((t, i) => t - times[i])
  return { ok: error == null, ...(error != null ? { error } : {}), tokens: error == null ? tokens : 0, ...(times.length > 0 ? { ttftMs: times[0] - t0 } : {}), gapsMs }
}

/** one generation from its own router peer: token times from onToken */
async function viaRouter (router: Router, seed: number): Promise<Outcome> {
  const t0 = performance.now()
  const times: number[] = []
  try {
    const r = await router.generate('The kernel', { k: K, maxTokens, temperature: 0.8, seed, ignoreEos: true, onToken: () => { times.push(performance.now()) } })
    return { ok: true, tokens: r.tokens, ttftMs: times[0] - t0, gapsMs: times.slice(1).map((t, i) => t - times[i]) }
  } catch (err) {
    return { ok: false, error: (err as Error).name, tokens: 0, gapsMs: [] }
  }
}

/** one expert, n sessions stepping at once: ms per round (all n frames) */
async function batching (): Promise<Array<{ sessions: number, msPerRound: number, msPerSessionStep: number }>> {
  const out = []
  const host = await ModelHost.load({ modelPath: await resolveModel('meshtest-c'), threads: 1, maxSessions: 32 })
  try {
    for (const n of [1, 4, 16]) {
      const sessions = Array.from({ length: n }, () => host.openSession())
      await Promise.all(sessions.map(async (s, i) => await s.append([host.summary.bosTokenId ?? 0, 791 + i])))
      const rounds = 16
      const t0 = performance.now()
      for (let r = 0; r < rounds; r++) await Promise.all(sessions.map(async (s, i) => await s.append([1000 + ((r * 7 + i) % 500)])))
      const msPerRound = (performance.now() - t0) / rounds
      out.push({ sessions: n, msPerRound, msPerSessionStep: msPerRound / n })
      log(`batching: ${n} session(s) stepping at once: ${msPerRound.toFixed(1)} ms per round, ${(msPerRound / n).toFixed(1)} ms per session step`)
      await Promise.all(sessions.map(async s => await s.close()))
    }
  } finally {
    await host.close()
  }
  return out
}
const expertBatching = await batching()

const experts: SpawnedExpert[] = []
const proxies: DelayProxy[] = []
const routerNodes: MeshNode[] = []
/** the sessions each expert advertises (its record's maxSlots) */
let expertSlots: number[] = []
const results: Level[] = []
let ttft: { oneWayLatencyMs: number, warmApiMs: number[], coldGenerateTtftMs: number[], coldProcessMs: number[], coldCachedTtftMs: number[], coldCachedProcessMs: number[] } | undefined
let tokenizer: RouterTokenizer | undefined
try {
  const httpPort = await freePort()
  for (let i = 0; i < 4; i++) {
    const p = await freePort()
    const proxy = await startDelayProxy(p, latencyMs)
    proxies.push(proxy)
    const extra = ['--listen', `/ip4/127.0.0.1/tcp/${p}`, '--announce', `/ip4/127.0.0.1/tcp/${proxy.port}`, ...(perPeer != null ? ['--max-sessions-per-peer', perPeer] : []), ...(maxSessions != null ? ['--max-sessions', maxSessions] : [])]
    if (i === 0) extra.push('--http', `127.0.0.1:${httpPort}`)
    else extra.push('--bootstrap', experts[0].addr)
    experts.push(await spawnExpert('meshtest-c', extra))
  }
  const base = `http://127.0.0.1:${httpPort}`
  // the API node sees the other three through the DHT
  for (let i = 0; i < 120; i++) {
    const r = await fetch(`${base}/api/experts?refresh=1`).then(async r => await r.json()).catch(() => undefined) as { experts?: unknown[] } | undefined
    if ((r?.experts?.length ?? 0) >= 4) break
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  tokenizer = await RouterTokenizer.load('meshtest-c')
  const maxLevel = Math.max(...levels)
  if (modes.includes('routers')) {
    for (let i = 0; i < maxLevel; i++) {
      const node = await createMeshNode({ listen: [], dhtServer: false })
      await node.start()
      await connectBootstrap(node, [experts[0].addr])
      routerNodes.push(node)
    }
  }
  const routers = routerNodes.map(n => new Router(n, tokenizer as RouterTokenizer, { discoveryTtlMs: 600_000 }))
  // every router peer knows the four experts before its level is measured
  await Promise.all(routers.map(async r => { for (let i = 0; i < 120 && (await r.experts(true)).compatible.length < 4; i++) await new Promise(resolve => setTimeout(resolve, 500)) }))
  // the slots each expert advertises (with no --max-sessions: what 'auto' resolved to)
  const probeNode = await createMeshNode({ listen: [], dhtServer: false })
  await probeNode.start()
  await connectBootstrap(probeNode, [experts[0].addr])
  const probe = new Router(probeNode, tokenizer as RouterTokenizer)
  let known: ExpertRecord[] = []
  for (let i = 0; i < 120 && known.length < 4; i++) { known = (await probe.experts(true)).compatible; if (known.length < 4) await new Promise(resolve => setTimeout(resolve, 500)) }
  expertSlots = known.map(r => r.maxSlots)
  await probeNode.stop()
  log(`concurrency: 4 experts (meshtest-c, ${expertSlots.join('/')} sessions) at ${latencyMs} ms one way, K = ${K}, ${maxTokens} tokens per generation, T = 0.8`)
  // warm-up (not measured): each expert's first sessions and the API node's caches
  if (modes.includes('api')) await viaApi(base, 0)
  if (routers.length > 0) await viaRouter(routers[0], 0)
  for (const mode of modes) {
    for (const n of levels) {
      const t0 = performance.now()
      const outcomes = await Promise.all(Array.from({ length: n }, async (_x, i) => mode === 'api' ? await viaApi(base, 1 + i) : await viaRouter(routers[i], 1 + i)))
      const level = summarise(mode, n, performance.now() - t0, outcomes)
      const one = results.find(r => r.mode === mode && r.concurrency === 1)
      if (one != null) level.speedup = level.aggregateTokensPerSecond / one.aggregateTokensPerSecond
      results.push(level)
      log(`  ${mode.padEnd(7)} n=${String(n).padStart(2)}: ${level.aggregateTokensPerSecond.toFixed(1)} tokens/s in all${level.speedup != null ? ` (${level.speedup.toFixed(2)}× one)` : ''}, ${level.completed}/${n} completed${level.failed > 0 ? ` (${JSON.stringify(level.errors)})` : ''}, TTFT p50 ${level.ttftMsP50.toFixed(0)} ms, inter-token p50 ${level.interTokenMsP50.toFixed(0)} / p95 ${level.interTokenMsP95.toFixed(0)} ms`)
    }
  }
  // time to first token at --ttft-latency: warm (the running API node) and cold (a new process)
  for (const p of proxies) p.setDelay(ttftLatencyMs)
  const warmApiMs: number[] = []
  for (let i = 0; i < 5; i++) warmApiMs.push((await viaApi(base, 100 + i)).ttftMs ?? NaN)
  const coldGenerateTtftMs: number[] = []
  const coldProcessMs: number[] = []
  const coldCachedTtftMs: number[] = []
  const coldCachedProcessMs: number[] = []
  const cacheFile = join(await mkdtemp(join(tmpdir(), 'meshllm-bench-cache-')), 'records.json')
  const cold = async (seed: number, cache: string): Promise<{ ttftMs: number, processMs: number }> => {
    const t0 = performance.now()
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [BIN, 'generate', 'The kernel', '--bootstrap', `/ip4/127.0.0.1/tcp/${proxies[0].port}/p2p/${experts[0].addr.split('/p2p/')[1]}`, '-k', String(K), '--max-tokens', '4', '--seed', String(seed), '--record-cache', cache, '--json'], { timeout: 120_000 }, (err, out, errOut) => { if (err != null) reject(new Error(`${err.message}: ${errOut}`)); else resolve(out) })
    })
    return { ttftMs: JSON.parse(stdout).ttftMs, processMs: performance.now() - t0 }
  }
  // without a record cache: the DHT lookup, a dial and a record fetch per expert before the first open
  for (let i = 0; i < 3; i++) {
    const r = await cold(i, 'none')
    coldProcessMs.push(r.processMs)
    coldGenerateTtftMs.push(r.ttftMs)
  }
  // with one: a first run fills it; the next ones dial the cached experts beside the lookup
  await cold(9, cacheFile)
  for (let i = 0; i < 3; i++) {
    const r = await cold(i, cacheFile)
    coldCachedProcessMs.push(r.processMs)
    coldCachedTtftMs.push(r.ttftMs)
  }
  ttft = { oneWayLatencyMs: ttftLatencyMs, warmApiMs, coldGenerateTtftMs, coldProcessMs, coldCachedTtftMs, coldCachedProcessMs }
  const med = (xs: number[]): number => quantile(xs, 0.5)
  log(`time to first token at ${ttftLatencyMs} ms one way, K = ${K}: warm (API) ${med(warmApiMs).toFixed(0)} ms; cold generate ${med(coldGenerateTtftMs).toFixed(0)} ms from the call, ${med(coldProcessMs).toFixed(0)} ms for the whole process (no record cache); with a record cache ${med(coldCachedTtftMs).toFixed(0)} ms, ${med(coldCachedProcessMs).toFixed(0)} ms`)
} finally {
  await tokenizer?.close()
  await Promise.all(routerNodes.map(async n => await n.stop()))
  await Promise.all(experts.map(stopExpert))
  await Promise.all(proxies.map(async p => await p.close()))
}

const cpu = os.cpus()
const machine = `${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'))
const out = {
  date: new Date().toISOString(),
  version: pkg.version,
  machine,
  setup: { experts: 4, model: 'meshtest-c', threadsPerExpert: 1, maxSessions: maxSessions ?? 'auto', expertSlots, maxSessionsPerPeer: perPeer != null ? Number(perPeer) : 2, oneWayLatencyMs: latencyMs, k: K, maxTokens, temperature: 0.8 },
  goal: '16 concurrent generations: ≥ 8× the aggregate tokens/s of one, p95 inter-token latency ≤ 2× that of one',
  expertBatching,
  levels: results,
  ttft
}
const dir = new URL('../../bench/', import.meta.url)
const name = opt('--out') ?? 'concurrency'
await writeFile(new URL(`${name}.json`, dir), JSON.stringify(out, null, 2) + '\n')
await writeFile(new URL(`${name}.svg`, dir), chart(results, machine))
log(`written bench/${name}.json and bench/${name}.svg`)

/** aggregate tokens/s (left) and p95 inter-token latency (right) against concurrency, one line per mode */
function chart (levels: Level[], machine: string): string {
  const W = 360
  const H = 220
  const pad = { l: 52, r: 12, t: 28, b: 40 }
  const panel = (title: string, value: (l: Level) => number, x0: number): string => {
    const xs = [...new Set(levels.map(l => l.concurrency))].sort((a, b) => a - b)
    const max = Math.max(1, ...levels.map(value).filter(Number.isFinite)) * 1.1
    const px = (c: number): number => x0 + pad.l + (xs.length <= 1 ? 0 : (xs.indexOf(c) / (xs.length - 1)) * (W - pad.l - pad.r))
    const py = (v: number): number => pad.t + (1 - v / max) * (H - pad.t - pad.b)
    const colors: Record<string, string> = { api: '#1f77b4', routers: '#d62728' }
    let svg = `<text x="${x0 + W / 2}" y="16" text-anchor="middle" font-size="12">${title}</text>`
    svg += `<line x1="${x0 + pad.l}" y1="${H - pad.b}" x2="${x0 + W - pad.r}" y2="${H - pad.b}" stroke="#999"/><line x1="${x0 + pad.l}" y1="${pad.t}" x2="${x0 + pad.l}" y2="${H - pad.b}" stroke="#999"/>`
    for (const c of xs) svg += `<text x="${px(c)}" y="${H - pad.b + 14}" text-anchor="middle" font-size="10">${c}</text>`
    svg += `<text x="${x0 + W / 2}" y="${H - 8}" text-anchor="middle" font-size="10">concurrent generations</text>`
    for (let i = 0; i <= 4; i++) svg += `<text x="${x0 + pad.l - 4}" y="${py(max * i / 4) + 3}" text-anchor="end" font-size="9">${(max * i / 4).toFixed(0)}</text>`
    for (const mode of Object.keys(colors)) {
      const pts = levels.filter(l => l.mode === mode && Number.isFinite(value(l))).sort((a, b) => a.concurrency - b.concurrency)
      if (pts.length === 0) continue
      svg += `<polyline fill="none" stroke="${colors[mode]}" stroke-width="2" points="${pts.map(l => `${px(l.concurrency).toFixed(1)},${py(value(l)).toFixed(1)}`).join(' ')}"/>`
      svg += `<text x="${px(pts[pts.length - 1].concurrency) - 4}" y="${py(value(pts[pts.length - 1])) - 6}" text-anchor="end" font-size="10" fill="${colors[mode]}">${mode === 'api' ? 'one node\'s OpenAI API' : 'separate router peers'}</text>`
    }
    return svg
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 16}" font-family="sans-serif">` +
    panel('aggregate tokens/s', l => l.aggregateTokensPerSecond, 0) +
    panel('p95 inter-token latency (ms)', l => l.interTokenMsP95, W) +
    `<text x="${W}" y="${H + 12}" text-anchor="middle" font-size="9" fill="#666">${machine.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text></svg>\n`
}
