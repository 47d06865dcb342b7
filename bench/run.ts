/**
 * `npm run bench` — measured speed, written to bench/results.json and bench/chart.svg.
 * Never part of `npm test`. Options: --quick (fewer latencies/K/reps), --experts <n> (≤ 8),
 * --drafter <model> (speculation drafter, default meshtest-a), --latency 0,100 and --k 1,4 (subsets),
 * --modes tbt,spec0,spec0-serial,spec08,spec08-nocap (default tbt,spec0,spec08; spec0-serial: greedy
 * speculation without pipelined rounds; spec08-nocap: drafts not bounded by maxFramesPerToken),
 * --reps <n> (runs per row, default 3, --quick 1), --frames compact|full (what the routers ask for;
 * default compact), --frames-per-token <x> (a fixed draft cap instead of the byte budget), --out <name> (bench/<name>.json and .svg, default
 * results/chart).
 *
 * 1. frame building per position for each bundled model (forward pass vs frame cost, size)
 * 2. router aggregation per token (K = 1, 2, 4, 8)
 * 3. N expert processes on loopback, each behind a delay proxy (one-way latency 0/50/100/200 ms
 *    on every byte, both directions; experts announce the proxied address), a router in this
 *    process: tokens/s for K ∈ {1,2,4,8} (median and spread of repeated 64-token runs), bytes
 *    on the wire per expert per token, router CPU per token, peak RSS; with and without
 *    speculative decoding when the router supports it.
 */
import { writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import { ModelHost } from '../src/expert/model-host.js'
import { resolveModel } from '../src/expert/resolve.js'
import { encodeFrame } from '../src/wire/frame.js'
import { VOCAB_SIZE } from '../src/wire/types.js'
import { benchAggregate } from '../src/aggregate/bench.js'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../src/peer/spawn.js'
import { createMeshNode, connectBootstrap } from '../src/node/node.js'
import { Router, type GenerateOptions } from '../src/router/router.js'
import { RouterTokenizer } from '../src/router/tokenizer.js'
import { ModelDrafter } from '../src/router/drafter.js'
import { peerIdFromString } from '@libp2p/peer-id'
import { startDelayProxy, freePort, type DelayProxy } from './delay-proxy.js'
import { renderChart } from './chart.js'

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const nExperts = Math.min(8, Number(args[args.indexOf('--experts') + 1] ?? 8) || 8)
const opt = (name: string): string | undefined => args.includes(name) ? args[args.indexOf(name) + 1] : undefined
const drafterModel = opt('--drafter') ?? 'meshtest-a'
const onlyLatencies = opt('--latency')?.split(',').map(Number)
const onlyKs = opt('--k')?.split(',').map(Number)
const modeNames = (opt('--modes') ?? 'tbt,spec0,spec08').split(',')
const outName = opt('--out')
// the frames the router asks for (RouterOptions.frames) and a fixed draft cap in frames per token (default: the byte budget)
const framesOpt = opt('--frames')
if (framesOpt != null && framesOpt !== 'compact' && framesOpt !== 'full') throw new Error('--frames: compact or full')
const framesCapOpt = opt('--frames-per-token') != null ? Number(opt('--frames-per-token')) : undefined
if (framesCapOpt != null && !(framesCapOpt > 0)) throw new Error('--frames-per-token: a number > 0')
const routerOpts = { ...(framesOpt != null ? { frames: framesOpt as 'compact' | 'full' } : {}), ...(framesCapOpt != null ? { maxFramesPerToken: framesCapOpt } : {}) }
const MODES: Record<string, { speculative: boolean, temperature: number, pipelined?: boolean, framesCap?: boolean }> = {
  tbt: { speculative: false, temperature: 0 },
  spec0: { speculative: true, temperature: 0, pipelined: true },
  'spec0-serial': { speculative: true, temperature: 0, pipelined: false },
  spec08: { speculative: true, temperature: 0.8 },
  'spec08-nocap': { speculative: true, temperature: 0.8, framesCap: false }
}
for (const m of modeNames) if (MODES[m] == null) throw new Error(`--modes: unknown mode ${m} (${Object.keys(MODES).join(', ')})`)
const log = (s: string): void => { process.stdout.write(s + '\n') }
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

async function frames (): Promise<unknown[]> {
  const out = []
  for (const m of ['meshtest-a', 'meshtest-b', 'meshtest-c']) {
    const host = await ModelHost.load({ modelPath: await resolveModel(m), threads: 1, maxSessions: 1 })
    const s = host.openSession()
    let f = await s.append([host.summary.bosTokenId!, ...host.model.tokenize('The kernel') as number[]])
    s.timing.forwardMs = 0; s.timing.frameMs = 0
    let bytes = 0
    let compactBytes = 0
    const n = 64
    for (let i = 0; i < n; i++) {
      let best = 0
      for (let j = 1; j < f.ids.length; j++) if (f.logprobs[j] > f.logprobs[best]) best = j
      f = await s.append([f.ids[best]])
      bytes += encodeFrame(f).length
      compactBytes += encodeFrame(f, VOCAB_SIZE, 'compact').length
    }
    const r = { model: m, positions: n, native: (s as any).nativeFrames === true, forwardMsPerPosition: s.timing.forwardMs / n, frameMsPerPosition: s.timing.frameMs / n, frameBytes: bytes / n, compactFrameBytes: compactBytes / n }
    log(`frames  ${m}: forward ${r.forwardMsPerPosition.toFixed(2)} ms, frame ${r.frameMsPerPosition.toFixed(2)} ms per position (${r.native ? 'native' : 'sampler fallback'}), ${r.frameBytes.toFixed(0)} bytes full, ${r.compactFrameBytes.toFixed(0)} compact`)
    out.push(r)
    await s.close()
    await host.close()
  }
  return out
}

function peakRssKb (pid: number | undefined): number {
  if (pid == null) return 0
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m != null ? Number(m[1]) : 0
  } catch { return 0 }
}

interface MeshRun {
  latencyMs: number
  k: number
  speculative: boolean
  temperature: number
  tokens: number
  medianTokensPerSecond: number
  minTokensPerSecond: number
  maxTokensPerSecond: number
  bytesPerExpertToken: number
  /** measured at the delay proxies: everything on the TCP connections (noise, yamux, DHT/identify chatter included) */
  wireBytesPerExpertToken: number
  routerCpuMsPerToken: number
  pingRttMs: number
  acceptanceRate?: number
  tokensPerRound?: number
  /** temperature 0: whether rounds were pipelined (RouterOptions.pipelineRounds) */
  pipelined?: boolean
  /** rounds sent while another was in flight, and those discarded, per generation */
  pipelinedRounds?: number
  discardedRounds?: number
  /** ms from the generate call to the first token (median) */
  ttftMs?: number
  /** false: drafts not bounded by RouterOptions.maxFramesPerToken */
  framesCap?: boolean
  /** speculative: per verified round, ms awaiting the drafter on the rounds' path, awaiting the experts' frames, verifying */
  msPerRound?: { draft: number, wait: number, verify: number }
}

async function mesh (): Promise<{ runs: MeshRun[], expertPeakRssKb: number[], routerPeakRssKb: number, computeMsPerToken: number }> {
  const models = ['meshtest-a', 'meshtest-b', 'meshtest-c', 'meshtest-a', 'meshtest-b', 'meshtest-c', 'meshtest-a', 'meshtest-b'].slice(0, nExperts)
  const experts: SpawnedExpert[] = []
  const proxies: DelayProxy[] = []
  const runs: MeshRun[] = []
  let setDelay = (_ms: number): void => {}
  try {
    // every expert listens on P and announces the proxy Q → P
    let bootstrap: string | undefined
    for (const m of models) {
      const p = await freePort()
      const proxy = await startDelayProxy(p, 0)
      proxies.push(proxy)
      const extra = ['--listen', `/ip4/127.0.0.1/tcp/${p}`, '--announce', `/ip4/127.0.0.1/tcp/${proxy.port}`, '--max-sessions', '8']
      const e = await spawnExpert(m, bootstrap != null ? [...extra, '--bootstrap', bootstrap] : extra)
      experts.push(e)
      bootstrap ??= e.addr
    }
    setDelay = (ms: number) => { for (const p of proxies) p.setDelay(ms) }
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, [experts[0].addr])
    const tokenizer = await RouterTokenizer.load()
    const drafter = await ModelDrafter.load(drafterModel)
    const router = new Router(node, tokenizer, { discoveryTtlMs: 600_000, drafter, ...routerOpts })
    const serial = new Router(node, tokenizer, { discoveryTtlMs: 600_000, drafter, pipelineRounds: false, ...routerOpts })
    const nocap = new Router(node, tokenizer, { discoveryTtlMs: 600_000, drafter, ...routerOpts, maxFramesPerToken: Infinity })
    for (let i = 0; i < 80 && (await router.experts(true)).compatible.length < experts.length; i++) await new Promise(resolve => setTimeout(resolve, 250))
    log(`mesh    ${(await router.experts()).compatible.length} experts found through the DHT`)
    await router.generate('warm up', { k: Math.min(8, experts.length), maxTokens: 8, ignoreEos: true })
    // compute per token without latency (1 expert): the "compute" term of 1/(RTT + compute)
    const base = await router.generate('The kernel', { k: 1, maxTokens: 64, temperature: 0, ignoreEos: true })
    const computeMsPerToken = base.elapsedMs / base.tokens
    const latencies = onlyLatencies ?? (quick ? [0, 100] : [0, 50, 100, 200])
    const ks = onlyKs ?? (quick ? [1, 4] : [1, 2, 4, 8])
    const reps = Number(opt('--reps') ?? (quick ? 1 : 3))
    // token by token (greedy), speculative greedy (identical output), speculative sampling at T = 0.8
    const modes = modeNames.map(m => MODES[m]).filter(m => !m.speculative || router.supportsSpeculation)
    for (const latencyMs of latencies) {
      setDelay(latencyMs)
      const pingErrors: string[] = []
      const rtts = await Promise.all(experts.map(async e => (node.services.ping as any).ping(peerIdFromString(e.addr.split('/p2p/')[1]), { signal: AbortSignal.timeout(10_000) }).catch((err: any) => { pingErrors.push(`${e.model}: ${err.name}: ${err.message}`); return NaN })))
      if (pingErrors.length > 0) log(`  ping failed for ${pingErrors.length} expert(s): ${pingErrors.slice(0, 3).join('; ')}`)
      const ok = rtts.filter(Number.isFinite)
      if (ok.length === 0) throw new Error(`no expert answered a ping at ${latencyMs} ms (dead experts: ${experts.filter(e => e.child.exitCode != null || e.child.signalCode != null).map(e => `${e.model} ${e.child.exitCode ?? e.child.signalCode}: ${e.stderr().slice(-300)}`).join(' | ') || 'none'})`)
      const pingRttMs = median(ok)
      log(`latency ${latencyMs} ms one way: ping round trip through the proxy ${pingRttMs.toFixed(0)} ms`)
      for (const { speculative, temperature, pipelined, framesCap } of modes) {
        for (const k of ks.filter(k => k <= experts.length)) {
          const tps: number[] = []
          let bytes = 0; let cpu = 0; let accepted = 0; let drafted = 0; let rounds = 0; let tokens = 0; let wire = 0; let piped = 0; let discarded = 0; let draftMs = 0; let waitMs = 0; let verifyMs = 0
          const ttfts: number[] = []
          for (let rep = 0; rep < reps; rep++) {
            const c0 = process.cpuUsage()
            const opts: GenerateOptions = { k, maxTokens: 64, temperature, seed: rep, ignoreEos: true, speculative }
            const wire0 = proxies.reduce((a, p) => a + p.bytes.up + p.bytes.down, 0)
            const r: any = await (pipelined === false ? serial : framesCap === false ? nocap : router).generate(`The kernel ${rep}`, opts)
            ttfts.push(r.ttftMs)
            // bytes on the wire through the proxies (frames, framing, noise, yamux, both directions) per expert per token
            wire += (proxies.reduce((a, p) => a + p.bytes.up + p.bytes.down, 0) - wire0) / (r.tokens * r.effectiveK)
            const c1 = process.cpuUsage(c0)
            tps.push(r.tokensPerSecond)
            bytes += r.bytesPerExpertToken
            cpu += (c1.user + c1.system) / 1000 / r.tokens
            tokens += r.tokens
            if (r.speculation != null) { accepted += r.speculation.accepted; drafted += r.speculation.drafted; rounds += r.speculation.rounds; piped += r.speculation.pipelined; discarded += r.speculation.discarded; draftMs += r.speculation.draftMs; waitMs += r.speculation.waitMs; verifyMs += r.speculation.verifyMs }
          }
          const run: MeshRun = {
            latencyMs,
            k,
            speculative,
            temperature,
            tokens: tokens / reps,
            medianTokensPerSecond: median(tps),
            minTokensPerSecond: Math.min(...tps),
            maxTokensPerSecond: Math.max(...tps),
            bytesPerExpertToken: bytes / reps,
            wireBytesPerExpertToken: wire / reps,
            routerCpuMsPerToken: cpu / reps,
            pingRttMs,
            ttftMs: median(ttfts),
            ...(framesCap === false ? { framesCap } : {}),
            ...(speculative ? { acceptanceRate: drafted > 0 ? accepted / drafted : 0, tokensPerRound: rounds > 0 ? tokens / rounds : 0 } : {}),
            ...(speculative && rounds > 0 ? { msPerRound: { draft: draftMs / rounds, wait: waitMs / rounds, verify: verifyMs / rounds } } : {}),
            ...(speculative && temperature === 0 ? { pipelined: pipelined !== false, pipelinedRounds: piped / reps, discardedRounds: discarded / reps } : {})
          }
          runs.push(run)
          log(`  K=${k} ${speculative ? `spec T=${temperature}` : 'token by token'}: ${run.medianTokensPerSecond.toFixed(2)} tokens/s (${run.minTokensPerSecond.toFixed(2)}–${run.maxTokensPerSecond.toFixed(2)}), ${run.bytesPerExpertToken.toFixed(0)} B/expert/token (wire ${run.wireBytesPerExpertToken.toFixed(0)}), router CPU ${run.routerCpuMsPerToken.toFixed(2)} ms/token${run.acceptanceRate != null ? `, acceptance ${(run.acceptanceRate * 100).toFixed(0)} %, ${run.tokensPerRound!.toFixed(2)} tokens/round` : ''}${run.pipelinedRounds != null && run.pipelined === true ? `, ${run.pipelinedRounds.toFixed(1)} pipelined rounds (${run.discardedRounds!.toFixed(1)} discarded)` : ''}${speculative && temperature === 0 && pipelined === false ? ' (rounds not pipelined)' : ''}${framesCap === false ? ' (drafts not bounded by frames per token)' : ''}${run.msPerRound != null ? `; per round ${run.msPerRound.draft.toFixed(1)} ms drafting, ${run.msPerRound.wait.toFixed(1)} ms awaiting frames, ${run.msPerRound.verify.toFixed(1)} ms verifying` : ''}`)
        }
      }
    }
    const expertPeakRssKb = experts.map(e => peakRssKb(e.child.pid))
    await drafter.close()
    await tokenizer.close()
    await node.stop()
    return { runs, expertPeakRssKb, routerPeakRssKb: process.resourceUsage().maxRSS, computeMsPerToken }
  } finally {
    await Promise.all(experts.map(stopExpert))
    await Promise.all(proxies.map(async p => p.close()))
  }
}

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}`
log(`machine: ${machine}`)
const frameResults = await frames()
const agg = benchAggregate()
for (const r of agg) log(`aggregate ${r.rule} K=${r.k}: ${r.meanUs.toFixed(1)} µs per token`)
const meshResults = await mesh()
const out = { date: new Date().toISOString(), machine, experts: nExperts, quick, drafter: drafterModel, routerFrames: framesOpt ?? 'compact', framesPerTokenCap: framesCapOpt ?? 'byte budget', frames: frameResults, aggregate: agg, mesh: meshResults }
const dir = new URL('../../bench/', import.meta.url)
await writeFile(new URL(`${outName ?? 'results'}.json`, dir), JSON.stringify(out, null, 2) + '\n')
await writeFile(new URL(`${outName ?? 'chart'}.svg`, dir), renderChart(meshResults.runs, meshResults.computeMsPerToken, machine))
log(`written bench/${outName ?? 'results'}.json and bench/${outName ?? 'chart'}.svg`)
process.exit(0)
