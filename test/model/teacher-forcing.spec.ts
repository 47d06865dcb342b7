/**
 * Teacher forcing on a real model (meshtest-c): Frame.targetLogprob, prompt scoring and the
 * offline unlisted-mass accumulator, on the native path and the fallback path; plus the
 * native helper's target logprob on synthetic rows.
 */
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { ModelHost } from '../../src/expert/model-host.js'
import { resolveModel } from '../../src/expert/resolve.js'
import { nativeAddonPath, nativeDisabled } from '../../src/expert/native.js'
import { openFallbackSession } from '../helpers/fallback.js'

describe('teacher forcing (meshtest-c, real model)', function () {
  this.timeout(120_000)
  let host: ModelHost
  let tokens: number[]

  before(async () => {
    host = await ModelHost.load({ modelPath: await resolveModel('meshtest-c'), threads: 1, maxSessions: 2 })
    tokens = [host.summary.bosTokenId!, ...host.model.tokenize('The kernel module is loaded when the device is plugged in, and the driver') as number[]]
  })
  after(async () => { await host?.close() })

  describe('with the helper', function () {
    before(function () { if (nativeDisabled()) this.skip() })

    it('targetLogprob is the full-vocabulary logprob: listed or not', async () => {
      const ctx = tokens.slice(0, 6)
      const s = host.openSession()
      assert.ok(s.nativeFrames)
      const probe = await s.append(ctx)
      await s.close()
      const listed = probe.ids[3]
      // an id the frame does not list: the first id not in it
      const listedSet = new Set(probe.ids)
      let unlisted = 0
      while (listedSet.has(unlisted)) unlisted++
      const ref = host.context.getSequence()
      let full: Map<number, number> | undefined
      // eslint-disable-next-line no-unreachable-loop -- the first output is the one asked for
      for await (const out of ref.evaluateWithMetadata(ctx as any, { probabilities: true }, { temperature: 0 })) { full = out.probabilities as Map<number, number>; break }
      ref.dispose()
      let mass = 0
      for (const p of full!.values()) mass += p
      for (const target of [listed, unlisted]) {
        const t = host.openSession()
        const [f] = await t.evaluate(ctx, [], 256, { target })
        await t.close()
        assert.ok(f.targetLogprob != null, `target ${target}: no targetLogprob`)
        const exact = Math.log(full!.get(target)! / mass)
        assert.ok(Math.abs(f.targetLogprob - exact) <= 1e-4, `target ${target}: ${f.targetLogprob} vs ${exact}`)
        const i = [...f.ids].indexOf(target)
        if (i >= 0) assert.ok(Math.abs(f.logprobs[i] - f.targetLogprob) <= 1e-5)
        // the frame itself is unchanged by the target
        assert.deepEqual([...f.ids], [...probe.ids])
      }
    })

    it('the target goes to the last frame of a batch with a draft', async () => {
      const s = host.openSession()
      const frames = await s.evaluate(tokens.slice(0, 4), tokens.slice(4, 7), 256, { target: tokens[7] })
      await s.close()
      assert.equal(frames.length, 4)
      assert.equal(frames.slice(0, 3).some(f => f.targetLogprob !== undefined), false)
      assert.ok(frames[3].targetLogprob !== undefined && frames[3].targetLogprob <= 0)
    })

    it('scorePrompt sums exactly the target logprobs of one-by-one steps', async () => {
      const s = host.openSession()
      const r = await s.evaluateScored(tokens, [], 256, { scorePrompt: true })
      await s.close()
      assert.equal(r.promptScored, tokens.length - 1)
      let sum = 0
      const t = host.openSession()
      for (let i = 0; i < tokens.length - 1; i++) {
        const [f] = await t.evaluate([tokens[i]], [], 256, { target: tokens[i + 1] })
        sum += f.targetLogprob!
      }
      await t.close()
      assert.ok(r.promptLogprob != null && r.promptLogprob < 0)
      assert.ok(Math.abs(r.promptLogprob - sum) <= 1e-3 * tokens.length, `${r.promptLogprob} vs ${sum}`)
      // and the frame after the prompt is the usual one
      const u = host.openSession()
      const plain = await u.append(tokens)
      await u.close()
      assert.deepEqual([...r.frames[0].ids], [...plain.ids])
    })

    it('unlistedInto adds exactly the tail mass', async () => {
      const acc = new Float64Array(host.summary.vocabSize)
      const s = host.openSession()
      const [f] = await s.evaluate(tokens.slice(0, 5), [], 256, { unlistedInto: acc })
      await s.close()
      let sum = 0
      for (const x of acc) sum += x
      assert.ok(Math.abs(sum - f.tailMass) <= 1e-6, `${sum} vs ${f.tailMass}`)
      for (const id of f.ids) assert.ok(Math.abs(acc[id]) < 1e-12)
    })
  })

  it('fallback path: targetLogprob only for a listed target; no prompt score', async () => {
    const s = openFallbackSession(host)
    assert.equal(s.nativeFrames, false)
    const probe = await s.append(tokens.slice(0, 6))
    await s.close()
    const listed = probe.ids[0]
    const listedSet = new Set(probe.ids)
    let unlisted = 0
    while (listedSet.has(unlisted)) unlisted++
    for (const [target, present] of [[listed, true], [unlisted, false]] as const) {
      const t = openFallbackSession(host)
      const r = await t.evaluateScored(tokens.slice(0, 6), [], 256, { target, scorePrompt: true })
      await t.close()
      assert.equal(r.frames[0].targetLogprob !== undefined, present, `target ${target}`)
      if (present) assert.ok(Math.abs(r.frames[0].targetLogprob! - probe.logprobs[0]) <= 1e-5)
      assert.equal(r.promptLogprob, undefined)
      assert.equal(r.promptScored, undefined)
    }
  })
})

describe('native target logprob (synthetic rows)', function () {
  let addon: any
  before(function () {
    if (nativeDisabled()) this.skip()
    addon = createRequire(import.meta.url)(nativeAddonPath()!)
  })

  it('frameOf(…, target, out) and logprobOf give logit − logsumexp, on both code paths', () => {
    let seed = 3
    const rand = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
    for (const n of [1, 7, 300, 128256]) {
      const row = Float32Array.from({ length: n }, () => 8 * rand() - 4)
      let mx = -Infinity
      for (const x of row) mx = Math.max(mx, x)
      let z = 0
      for (const x of row) z += Math.exp(x - mx)
      const lse = mx + Math.log(z)
      for (const target of [0, n - 1, n >> 1]) {
        const want = row[target] - lse
        for (const generic of [false, true]) {
          const out = new Float64Array(1)
          const k = Math.min(16, n)
          const tail = addon.frameOf(row, new Uint32Array(k), new Float32Array(k), generic, target, out)
          assert.ok(tail >= 0)
          assert.ok(Math.abs(out[0] - want) <= 1e-6, `n ${n} target ${target}: ${out[0]} vs ${want}`)
          assert.ok(Math.abs(addon.logprobOf(row, target, generic) - want) <= 1e-6)
        }
      }
    }
    const bad = new Float32Array(10).fill(1)
    bad[3] = NaN
    assert.ok(Number.isNaN(addon.logprobOf(bad, 0)))
    assert.ok(Number.isNaN(addon.logprobOf(new Float32Array(10), 10)))
    // a target outside the row is a bad argument
    assert.equal(addon.frameOf(new Float32Array(10), new Uint32Array(4), new Float32Array(4), false, 10, new Float64Array(1)), -4)
  })
})
