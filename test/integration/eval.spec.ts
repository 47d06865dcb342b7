/**
 * Teacher-forced evaluation end to end: three expert processes (meshtest-a, -b, -c), frames
 * with target logprobs through the real protocol, `meshllm eval`'s command function, prompt
 * scoring on the wire and the router's perplexity weighting.
 */
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { LocalModel } from '../../src/router/local-model.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { ExpertSession } from '../../src/router/expert-client.js'
import { peerIdFromString } from '@libp2p/peer-id'
import { runEvalCommand, formatEvalResult } from '../../src/eval/cli.js'
import { readHeldout } from '../../src/eval/eval.js'

const HELDOUT = fileURLToPath(new URL('../../../models/heldout.txt.gz', import.meta.url))

describe('teacher-forced evaluation (3 expert processes)', function () {
  this.timeout(180_000)
  const experts: SpawnedExpert[] = []
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let router: Router
  const peer = (i: number): string => experts[i].addr.split('/p2p/')[1]

  before(async () => {
    const a = await spawnExpert('meshtest-a')
    experts.push(a)
    experts.push(...await Promise.all([
      spawnExpert('meshtest-b', ['--bootstrap', a.addr]),
      spawnExpert('meshtest-c', ['--bootstrap', a.addr])
    ]))
    node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, experts.map(e => e.addr))
    tokenizer = await RouterTokenizer.load('meshtest-c')
    router = new Router(node, tokenizer)
    for (let i = 0; i < 40; i++) {
      if ((await router.experts(true)).compatible.length >= 3) break
      await new Promise(resolve => setTimeout(resolve, 250))
    }
  })

  after(async () => {
    await tokenizer?.close()
    await node?.stop()
    await Promise.all(experts.map(stopExpert))
  })

  it('meshllm eval: every expert and ensemble variant on the same 300 positions', async () => {
    const r = await runEvalCommand({ heldout: HELDOUT, bootstrap: [experts[0].addr], 'max-tokens': '300', json: true, subsets: true })
    assert.equal(r.positions, 300)
    assert.ok(r.windows >= 2 && r.documents >= 2, `${r.windows} windows, ${r.documents} documents`)
    assert.deepEqual(Object.keys(r.experts).sort(), [peer(0), peer(1), peer(2)].sort())
    for (const [id, x] of Object.entries(r.experts)) {
      assert.match(x.model, /^meshtest-[abc]$/)
      assert.equal(x.missingExact, 0, `${x.model}: positions without target_logprob`)
      assert.ok(x.exactPerplexity != null && Number.isFinite(x.exactPerplexity) && x.exactPerplexity > 1, `${id} exact ${x.exactPerplexity}`)
      assert.ok(Number.isFinite(x.perplexity) && x.perplexity > 1)
      // the full distribution is never worse than its top-256 frame with any context-free tail
      // guess (the 'context' tail adds what the context says, and can beat it: docs/quality.md)
      for (const [tail, p] of Object.entries(x.perplexityByTail)) if (tail !== 'context') assert.ok(x.exactPerplexity <= p! + 1e-9, `${x.model}: exact ${x.exactPerplexity} > ${tail} ${p}`)
      assert.ok(x.listedRate > 0.5 && x.listedRate <= 1)
    }
    // the sizes order the test models: a is the best, c the worst (exact perplexity)
    const byModel = Object.fromEntries(Object.values(r.experts).map(x => [x.model, x.exactPerplexity!]))
    assert.ok(byModel['meshtest-a'] < byModel['meshtest-c'], JSON.stringify(byModel))
    // 4 subsets × 3 rules × 4 weightings × 4 tails, and again with the router's robust
    // aggregation for the one set of ≥ 3 experts (where it is the router's default)
    assert.equal(r.variants.length, 4 * 3 * 4 * 4 + 3 * 4 * 4)
    assert.ok(r.variants.every(v => !v.robust || v.experts.length === 3))
    for (const v of r.variants) {
      assert.ok(Number.isFinite(v.perplexity) && v.perplexity > 1, JSON.stringify(v))
      assert.equal(v.experts.length, v.models.length)
    }
    // ensemble: the router's default configuration (robust at K = 3), not the best variant
    assert.equal(r.ensemble.experts.length, 3)
    assert.deepEqual([r.ensemble.rule, r.ensemble.weighting, r.ensemble.tail, r.ensemble.robust], ['mixture', 'online', 'context', true])
    assert.equal(r.localModel, null)
    assert.deepEqual(r.skipped, [])
    assert.ok(r.variants.every(v => v.experts.length < 3 || v.perplexity >= r.best.perplexity))
    assert.ok(r.bytesPerExpertToken > 100 && r.bytesPerExpertToken < 1100, `bytes ${r.bytesPerExpertToken}`)
    assert.ok(JSON.parse(JSON.stringify(r)).ensemble.perplexity === r.ensemble.perplexity)
    assert.match(formatEvalResult(r), /best: /)
  })

  it("--local-model: the 'local' tail from the router's own model; an expert that left is skipped and named", async () => {
    // a fourth expert joins, is found, and leaves: its record stays in the DHT
    const gone = await spawnExpert('meshtest-b', ['--bootstrap', experts[0].addr])
    const goneId = gone.addr.split('/p2p/')[1]
    for (let i = 0; i < 40; i++) {
      if ((await router.experts(true)).compatible.some(r => r.peerId.toString() === goneId)) break
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    await stopExpert(gone)
    const r = await runEvalCommand({ heldout: HELDOUT, bootstrap: [experts[0].addr], 'max-tokens': '60', documents: '60-91', 'local-model': 'meshtest-c', rules: 'mixture', weighting: 'online', tails: 'context,local', robust: 'off,on', json: true })
    assert.deepEqual(r.skipped.map(x => x.id), [goneId])
    assert.deepEqual(Object.keys(r.experts).sort(), [peer(0), peer(1), peer(2)].sort())
    assert.equal(r.positions, 60)
    assert.deepEqual(r.localModel, { model: 'meshtest-c', exact: process.env.MESHLLM_NATIVE !== '0' })
    // with a local model the router's default tail is 'local'
    assert.deepEqual([r.ensemble.rule, r.ensemble.weighting, r.ensemble.tail, r.ensemble.robust], ['mixture', 'online', 'local', true])
    for (const x of Object.values(r.experts)) assert.ok(Number.isFinite(x.perplexityByTail.local) && x.perplexityByTail.local! > 1)
    assert.match(formatEvalResult(r), /skipped: meshtest-b/)
  })

  it("router: with a local model the default tail is 'local'; greedy at K = 1 is still the expert's own choice", async () => {
    const localModel = await LocalModel.load('meshtest-c', { expect: tokenizer })
    try {
      const withLocal = new Router(node, tokenizer, { localModel })
      const prompt = 'The kernel module is loaded when the'
      const opts = { k: 1, maxTokens: 12, temperature: 0, ignoreEos: true, experts: [peer(0)] }
      const a = await withLocal.generate(prompt, opts)
      const plain = await router.generate(prompt, { ...opts, tail: 'uniform', weighting: 'uniform' })
      assert.equal(a.text, plain.text)
      // the 'local' tail on a router without a local model: a clear error, before any expert is asked
      await assert.rejects(router.generate(prompt, { ...opts, tail: 'local' }), { name: 'InvalidGenerateOptionError' })
    } finally {
      await localModel.close()
    }
  })

  it('Open.score_prompt: the prompt\'s log-likelihood equals the sum of teacher-forced steps', async () => {
    const doc = readHeldout(HELDOUT)[1]
    const tokens = tokenizer.encodePrompt(doc).slice(0, 40)
    const pid = peerIdFromString(peer(1))
    const signal = AbortSignal.timeout(30_000)
    const scored = await ExpertSession.connect(node, pid, { signal })
    await scored.open(Uint32Array.from(tokens), tokenizer.fingerprint, { signal, scorePrompt: true })
    await scored.close()
    assert.equal(scored.info?.promptScored, tokens.length - 1)
    const stepped = await ExpertSession.connect(node, pid, { signal })
    let sum = 0
    let f = await stepped.open(Uint32Array.of(tokens[0]), tokenizer.fingerprint, { signal, target: tokens[1] })
    sum += f.targetLogprob!
    for (let i = 1; i < tokens.length - 1; i++) {
      f = await stepped.step(Uint32Array.of(tokens[i]), { signal, target: tokens[i + 1] })
      sum += f.targetLogprob!
    }
    await stepped.close()
    // float32 on the wire per step, double for the sum
    assert.ok(Math.abs(scored.info!.promptLogprob! - sum) < 1e-3 * tokens.length, `${scored.info!.promptLogprob} vs ${sum}`)
    // without the request nothing extra comes back
    const plain = await ExpertSession.connect(node, pid, { signal })
    const pf = await plain.open(Uint32Array.from(tokens), tokenizer.fingerprint, { signal })
    await plain.close()
    assert.equal(plain.info?.promptLogprob, undefined)
    assert.equal(pf.targetLogprob, undefined)
  })

  it('router: weighting \'perplexity\' generates with prompt-scored sessions', async () => {
    const r = await router.generate('The kernel module is loaded when the', { k: 3, maxTokens: 6, temperature: 0, weighting: 'perplexity', tail: 'unigram', ignoreEos: true })
    assert.equal(r.tokens, 6)
    assert.equal(r.effectiveK, 3)
  })

  it("router: the 'context' tail never changes the greedy choice (it only reshapes unlisted mass); sampling with it runs", async () => {
    const prompt = 'int main(int argc, char **argv) { int count = argc; if (count'
    const opts = { k: 3, maxTokens: 24, temperature: 0, weighting: 'perplexity' as const, ignoreEos: true }
    const bounded = await router.generate(prompt, { ...opts, tail: 'bounded' })
    const context = await router.generate(prompt, { ...opts, tail: 'context' })
    assert.equal(context.text, bounded.text)
    const sampled = await router.generate(prompt, { ...opts, temperature: 1, seed: 3, tail: 'context' })
    assert.equal(sampled.tokens, 24)
  })
})
