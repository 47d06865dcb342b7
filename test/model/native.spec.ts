/**
 * The native frame helper (native/, src/expert/native.ts) against the fallback path
 * (node-llama-cpp's two samplers) and against node-llama-cpp's full probability map.
 *
 * The helper must be available here (scripts/build-native.mjs builds it wherever g++ is);
 * with MESHLLM_NATIVE=0 only the fallback is exercised.
 */
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { ModelHost } from '../../src/expert/model-host.js'
import { resolveModel } from '../../src/expert/resolve.js'
import { nativeAddonPath, nativeDisabled, nativeInfo, nativeStatus } from '../../src/expert/native.js'
import type { Frame } from '../../src/wire/types.js'
import { openFallbackSession } from '../helpers/fallback.js'

function argmax (f: Frame): number {
  let best = 0
  for (let i = 1; i < f.logprobs.length; i++) if (f.logprobs[i] > f.logprobs[best]) best = i
  return f.ids[best]
}

/**
 * The fallback's normaliser is a float32 sum over the whole vocabulary (node-llama-cpp's
 * greedy `confidence`), off by up to ~0.5 %: its logprobs are the exact ones shifted by one
 * constant c per frame, and its tail is 1 − (1 − tail)·e^(−c). So: same ids (the set may
 * differ only among ids tied at the boundary), logprob differences constant within 1e-5,
 * |c| < 1e-2, and the tails consistent within 1e-5 once c is accounted for.
 */
function assertSameFrame (exact: Frame, fallback: Frame, what: string): void {
  assert.equal(exact.position, fallback.position, `${what}: position`)
  assert.equal(exact.ids.length, fallback.ids.length, `${what}: length`)
  const fbById = new Map([...fallback.ids].map((id, i) => [id, fallback.logprobs[i]]))
  const diffs: number[] = []
  const missing: number[] = []
  for (let i = 0; i < exact.ids.length; i++) {
    const lb = fbById.get(exact.ids[i])
    if (lb == null) missing.push(i)
    // both clamp at -64; only compare unclamped values
    else if (lb > -64 && exact.logprobs[i] > -64) diffs.push(exact.logprobs[i] - lb)
  }
  assert.ok(diffs.length > exact.ids.length / 2, `${what}: too few common ids`)
  const c = [...diffs].sort((x, y) => x - y)[diffs.length >> 1]
  assert.ok(Math.abs(c) < 1e-2, `${what}: fallback normaliser off by ${c}`)
  for (const d of diffs) assert.ok(Math.abs(d - c) <= 1e-5, `${what}: logprob difference ${d} vs the frame's ${c}`)
  // ids listed by one path only: ties at the boundary
  const floorFallback = Math.min(...fallback.logprobs) + c
  for (const i of missing) {
    assert.ok(Math.abs(exact.logprobs[i] - floorFallback) <= 1e-4, `${what}: id ${exact.ids[i]} (${exact.logprobs[i]}) missing from the fallback frame`)
  }
  const predictedFallbackTail = 1 - (1 - exact.tailMass) * Math.exp(-c)
  assert.ok(Math.abs(fallback.tailMass - predictedFallbackTail) <= 1e-5, `${what}: tail ${exact.tailMass}, fallback ${fallback.tailMass}, predicted ${predictedFallbackTail}`)
}

describe('native frame helper (meshtest-c, real model)', function () {
  this.timeout(120_000)
  let host: ModelHost

  before(async () => {
    host = await ModelHost.load({ modelPath: await resolveModel('meshtest-c'), threads: 1, maxSessions: 2 })
  })
  after(async () => { await host?.close() })

  it('is available (built by scripts/build-native.mjs) unless MESHLLM_NATIVE=0', async () => {
    const s = host.openSession()
    await s.close()
    if (nativeDisabled()) {
      assert.equal(s.nativeFrames, false)
      return
    }
    const info = nativeInfo()
    assert.ok(info.loaded, `native helper not loaded: ${info.error ?? 'unknown'} (path ${info.path ?? 'none'})`)
    assert.ok(s.nativeFrames, `native helper not attached: ${nativeStatus()}`)
    assert.match(info.library ?? '', /libllama/)
  })

  it('MESHLLM_NATIVE=0 selects the fallback path', async () => {
    const s = openFallbackSession(host)
    assert.equal(s.nativeFrames, false)
    const f = await s.append([host.summary.bosTokenId!, ...host.model.tokenize('Hello') as number[]])
    await s.close()
    assert.equal(f.ids.length, 256)
  })

  describe('with the helper', function () {
    before(function () {
      if (nativeDisabled()) this.skip()
    })

    it('gives the same frames as the two-sampler path over a few dozen positions', async () => {
      const fast = host.openSession()
      const slow = openFallbackSession(host)
      assert.ok(fast.nativeFrames && !slow.nativeFrames)
      try {
        const prompt = [host.summary.bosTokenId!, ...host.model.tokenize('The kernel module is loaded when the') as number[]]
        let a = await fast.append(prompt)
        let b = await slow.append(prompt)
        assertSameFrame(a, b, 'prompt')
        for (let i = 0; i < 40; i++) {
          // alternate greedy and a lower-ranked token so the contexts are not all "easy"
          const next = i % 3 === 2 ? a.ids[Math.min(40, a.ids.length - 1)] : argmax(a)
          a = await fast.append([next])
          b = await slow.append([next])
          assertSameFrame(a, b, `position ${a.position}`)
          // sorted by logprob descending, ties by lower id
          for (let j = 1; j < a.ids.length; j++) {
            assert.ok(a.logprobs[j - 1] > a.logprobs[j] || (a.logprobs[j - 1] === a.logprobs[j] && a.ids[j - 1] < a.ids[j]), `order at ${j}`)
          }
        }
        // a catch-up batch of several tokens, and a smaller k
        const more = host.model.tokenize(' git commit -m "fix"') as number[]
        a = await fast.append(more, 16)
        b = await slow.append(more, 16)
        assert.equal(a.ids.length, 16)
        assertSameFrame(a, b, 'catch-up, k = 16')
      } finally {
        await fast.close()
        await slow.close()
      }
    })

    it('matches node-llama-cpp\'s full-vocabulary probability map (renormalised in double)', async () => {
      for (const text of ['import numpy as', 'Hello', 'The kernel module is loaded when the']) {
        const tokens = [host.summary.bosTokenId!, ...host.model.tokenize(text) as number[]]
        const s = host.openSession()
        assert.ok(s.nativeFrames)
        const frame = await s.append(tokens)
        await s.close()
        const ref = host.context.getSequence()
        let full: Map<number, number> | undefined
        // eslint-disable-next-line no-unreachable-loop -- the first output is the one asked for
        for await (const out of ref.evaluateWithMetadata(tokens as any, { probabilities: true }, { temperature: 0 })) {
          full = out.probabilities as Map<number, number>
          break
        }
        ref.dispose()
        assert.ok(full != null && full.size === host.summary.vocabSize)
        // the map's ratios are exact (float32 exp), its normaliser is a float32 sum: renormalise
        let mass = 0
        for (const p of full.values()) mass += p
        let rest = 0
        const listedIds = new Set(frame.ids)
        for (const [id, p] of full) if (!listedIds.has(id)) rest += p / mass
        for (let i = 0; i < frame.ids.length; i++) {
          const p = full.get(frame.ids[i])! / mass
          const q = Math.exp(frame.logprobs[i])
          assert.ok(Math.abs(q - p) <= 1e-8 + 1e-5 * p, `${text}: token ${frame.ids[i]}: ${q} vs ${p}`)
        }
        // exactly the 256 most probable ids (up to ties at the boundary)
        const sorted = [...full.values()].sort((x, y) => y - x)
        const minListed = Math.min(...[...frame.ids].map(id => full!.get(id)!))
        assert.ok(minListed >= sorted[255], `${text}: least listed ${minListed} < 256th ${sorted[255]}`)
        assert.ok(Math.abs(frame.tailMass - rest) <= 1e-6, `${text}: tail ${frame.tailMass} vs ${rest}`)
      }
    })

    it('refuses what it cannot verify instead of crashing', async () => {
      const addon = createRequire(import.meta.url)(nativeAddonPath()!)
      const ctx = (host.context as any)._ctx
      const model = (host.model as any)._model
      const n = ctx.getContextSize()
      assert.equal(addon.probe(ctx, model, n, host.summary.vocabSize), '')
      assert.match(addon.probe(ctx, model, n, host.summary.vocabSize + 1), /vocabulary size/)
      assert.match(addon.probe(ctx, model, n + 1, host.summary.vocabSize), /llama_n_ctx/)
      assert.match(addon.probe({}, model, n, host.summary.vocabSize), /unwrap/)
      assert.match(addon.probe(model, ctx, n, host.summary.vocabSize), /layout mismatch/)
      const ids = new Uint32Array(8)
      const lps = new Float32Array(8)
      assert.equal(addon.topk({}, 0, ids, lps), -3)
      assert.equal(addon.topk(model, 0, ids, lps), -3)
      assert.equal(addon.topk(ctx, 0, new Float32Array(8), lps), -4)
      assert.equal(addon.topk(ctx, 0, new Uint32Array(300), new Float32Array(300)), -4)
    })
  })
})

describe('native frame computation (synthetic rows)', function () {
  let addon: any

  before(function () {
    if (nativeDisabled()) this.skip()
    const path = nativeAddonPath()
    assert.ok(path != null, 'native/build/meshllm_native.node is not built')
    addon = createRequire(import.meta.url)(path)
  })

  /** double-precision reference: ids by (logit desc, id asc), logprobs, tail */
  function reference (row: Float32Array, k: number): { ids: number[], logprobs: number[], tail: number } {
    let mx = -Infinity
    for (const x of row) if (x > mx) mx = x
    let total = 0
    for (const x of row) total += Math.exp(x - mx)
    const lse = mx + Math.log(total)
    const order = [...row.keys()].sort((a, b) => row[b] - row[a] || a - b).slice(0, k)
    let listed = 0
    for (const i of order) listed += Math.exp(row[i] - mx)
    return { ids: order, logprobs: order.map(i => Math.max(-64, row[i] - lse)), tail: (total - listed) / total }
  }

  function check (row: Float32Array, k: number, what: string): void {
    const ref = reference(row, k)
    // both code paths: the one this CPU uses (AVX2+FMA on most x86-64) and the 4-lane one
    for (const generic of [false, true]) checkOne(row, k, `${what}${generic ? ' (4 lanes)' : ''}`, ref, generic)
  }

  function checkOne (row: Float32Array, k: number, what: string, ref: ReturnType<typeof reference>, generic: boolean): void {
    const ids = new Uint32Array(k)
    const lps = new Float32Array(k)
    const tail = addon.frameOf(row, ids, lps, generic)
    assert.deepEqual([...ids], ref.ids, `${what}: ids`)
    for (let i = 0; i < k; i++) assert.ok(Math.abs(lps[i] - ref.logprobs[i]) <= 2e-7 * (1 + Math.abs(ref.logprobs[i])), `${what}: logprob ${i}: ${lps[i]} vs ${ref.logprobs[i]}`)
    assert.ok(Math.abs(tail - ref.tail) <= 1e-7 + 1e-6 * ref.tail, `${what}: tail ${tail} vs ${ref.tail}`)
  }

  let seed = 7
  const rand = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  const gauss = (): number => Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand())

  it('matches a double-precision reference on rows of many sizes', () => {
    for (const n of [1, 5, 16, 17, 255, 256, 257, 1000, 4099, 128256]) {
      const row = Float32Array.from({ length: n }, () => 4 * gauss())
      check(row, Math.min(256, n), `n = ${n}`)
      if (n >= 16) check(row, 16, `n = ${n}, k = 16`)
    }
  })

  it('orders ties by id, ignores -inf logits, clamps at -64', () => {
    const row = new Float32Array(5000).fill(-Infinity)
    for (let i = 0; i < 5000; i += 7) row[i] = 1.5  // many exact ties, across the k boundary
    row[4999] = 9
    row[3] = -80  // logprob below -64
    check(row, 256, 'ties')
    const few = new Float32Array(300).fill(-Infinity)
    few[10] = 2; few[20] = 2; few[299] = 0; few[0] = -70
    check(few, 256, 'mostly -inf')
  })

  it('refuses non-finite rows and bad arguments', () => {
    const ids = new Uint32Array(4)
    const lps = new Float32Array(4)
    const row = new Float32Array(100).fill(0.5)
    row[50] = NaN
    assert.equal(addon.frameOf(row, ids, lps), -2)
    assert.equal(addon.frameOf(row, ids, lps, true), -2)
    row[50] = Infinity
    assert.equal(addon.frameOf(row, ids, lps), -2)
    assert.equal(addon.frameOf(row, ids, lps, true), -2)
    assert.equal(addon.frameOf(new Float32Array(100).fill(-Infinity), ids, lps), -2)
    assert.equal(addon.frameOf(new Float32Array(3), ids, lps), -4)
    assert.equal(addon.frameOf(new Float64Array(100), ids, lps), -4)
  })
})
