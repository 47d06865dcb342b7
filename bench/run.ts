/**
 * `npm run bench`: measured speed, written to bench/results.json (never asserted in tests).
 * 1. frame building per position for each bundled model (forward pass vs frame cost, size)
 * 2. router aggregation per token (K = 1, 2, 4, 8)
 * 3. a loopback mesh of expert processes: tokens/s and bytes per expert per token for K = 1…4
 */
import { writeFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import { ModelHost } from '../src/expert/model-host.js'
import { resolveModel } from '../src/expert/resolve.js'
import { encodeFrame } from '../src/wire/frame.js'
import { benchAggregate } from '../src/aggregate/bench.js'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../src/cli/demo.js'
import { createMeshNode, connectBootstrap } from '../src/node/node.js'
import { Router } from '../src/router/router.js'
import { RouterTokenizer } from '../src/router/tokenizer.js'

const log = (s: string): void => { process.stdout.write(s + '\n') }

async function frames (): Promise<unknown[]> {
  const out = []
  for (const m of ['meshtest-a', 'meshtest-b', 'meshtest-c']) {
    const host = await ModelHost.load({ modelPath: await resolveModel(m), threads: 1, maxSessions: 1 })
    const s = host.openSession()
    let f = await s.append([host.summary.bosTokenId!, ...host.model.tokenize('The kernel') as number[]])
    s.timing.forwardMs = 0; s.timing.frameMs = 0
    let bytes = 0
    const n = 64
    for (let i = 0; i < n; i++) {
      let best = 0
      for (let j = 1; j < f.ids.length; j++) if (f.logprobs[j] > f.logprobs[best]) best = j
      f = await s.append([f.ids[best]])
      bytes += encodeFrame(f).length
    }
    const r = { model: m, positions: n, forwardMsPerPosition: s.timing.forwardMs / n, frameMsPerPosition: s.timing.frameMs / n, frameBytes: bytes / n }
    log(`frames  ${m}: forward ${r.forwardMsPerPosition.toFixed(2)} ms, frame ${r.frameMsPerPosition.toFixed(2)} ms per position, ${r.frameBytes.toFixed(0)} bytes`)
    out.push(r)
    await s.close()
    await host.close()
  }
  return out
}

async function mesh (): Promise<unknown[]> {
  const experts: SpawnedExpert[] = []
  const results = []
  try {
    const a = await spawnExpert('meshtest-a')
    experts.push(a)
    experts.push(...await Promise.all(['meshtest-b', 'meshtest-c', 'meshtest-c'].map(async m => spawnExpert(m, ['--bootstrap', a.addr]))))
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, [a.addr])
    const tokenizer = await RouterTokenizer.load()
    const router = new Router(node, tokenizer)
    for (let i = 0; i < 40 && (await router.experts(true)).compatible.length < experts.length; i++) await new Promise(r => setTimeout(r, 250))
    await router.generate('warm up', { k: 4, maxTokens: 8, ignoreEos: true })
    for (const k of [1, 2, 3, 4]) {
      const runs = []
      for (let rep = 0; rep < 3; rep++) {
        const r = await router.generate('The kernel', { k, maxTokens: 64, temperature: 0.8, seed: rep, ignoreEos: true })
        runs.push({ tokensPerSecond: r.tokensPerSecond, bytesPerExpertToken: r.bytesPerExpertToken })
      }
      const tps = runs.map(r => r.tokensPerSecond).sort((x, y) => x - y)
      const res = { k, latencyMs: 0, tokens: 64, medianTokensPerSecond: tps[1], minTokensPerSecond: tps[0], maxTokensPerSecond: tps[2], bytesPerExpertToken: runs[1].bytesPerExpertToken }
      log(`mesh    K=${k}: ${res.medianTokensPerSecond.toFixed(1)} tokens/s (${tps[0].toFixed(1)}–${tps[2].toFixed(1)}), ${res.bytesPerExpertToken.toFixed(0)} bytes per expert per token`)
      results.push(res)
    }
    await tokenizer.close()
    await node.stop()
  } finally {
    await Promise.all(experts.map(stopExpert))
  }
  return results
}

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}`
log(`machine: ${machine}`)
const frameResults = await frames()
const agg = benchAggregate()
for (const r of agg) log(`aggregate ${r.rule} K=${r.k}: ${r.meanUs.toFixed(1)} µs per token`)
const meshResults = await mesh()
await mkdir(new URL('.', import.meta.url), { recursive: true })
const file = new URL('../../bench/results.json', import.meta.url)
await writeFile(file, JSON.stringify({ date: new Date().toISOString(), machine, frames: frameResults, aggregate: agg, mesh: meshResults }, null, 2) + '\n')
log(`written ${file.pathname}`)
process.exit(0)
