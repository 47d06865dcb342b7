/**
 * Speculative mesh decoding against real expert processes: at temperature 0 the text is
 * identical to token-by-token decoding with the same experts; drafts are really scored in
 * batches (several tokens per round); rejected drafts are rolled back on the experts.
 */
import assert from 'node:assert/strict'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { LocalModel } from '../../src/router/local-model.js'
import { ModelDrafter, NgramDrafter, type Drafter } from '../../src/router/drafter.js'

/**
 * every generation starts from the same weights: the 'online' weighting's memory across a
 * router's generations would otherwise make the second of two compared runs start from what
 * the first learnt (lossless is per generation, from the same state)
 */
const FRESH = { expertMemory: { memoryTokens: 0 } }

describe('speculative mesh decoding (2 expert processes)', function () {
  this.timeout(180_000)
  const experts: SpawnedExpert[] = []
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let drafter: ModelDrafter
  let router: Router
  let ids: string[]

  before(async () => {
    const a = await spawnExpert('meshtest-a')
    experts.push(a, await spawnExpert('meshtest-b', ['--bootstrap', a.addr]))
    ids = experts.map(e => e.addr.split('/p2p/')[1])
    node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, [a.addr])
    tokenizer = await RouterTokenizer.load('meshtest-c')
    drafter = await ModelDrafter.load('meshtest-c')
    router = new Router(node, tokenizer, { drafter, ...FRESH })
    for (let i = 0; i < 40 && (await router.experts(true)).compatible.length < 2; i++) await new Promise(resolve => setTimeout(resolve, 250))
  })

  after(async () => {
    await drafter?.close()
    await tokenizer?.close()
    await node?.stop()
    await Promise.all(experts.map(stopExpert))
  })

  for (const prompt of ['The kernel', 'def main():', 'Perl is']) {
    it(`temperature 0: identical text with and without speculation (K=2, "${prompt}")`, async () => {
      const base = await router.generate(prompt, { k: 2, maxTokens: 48, temperature: 0, experts: ids, ignoreEos: true })
      const spec = await router.generate(prompt, { k: 2, maxTokens: 48, temperature: 0, experts: ids, ignoreEos: true, speculative: true })
      assert.equal(spec.text, base.text)
      assert.equal(spec.tokens, 48)
      assert.ok(spec.speculation != null)
      assert.ok(spec.speculation.rounds < 48, `${spec.speculation.rounds} rounds for 48 tokens`)
      assert.ok(spec.speculation.pipelined > 0, 'greedy rounds are pipelined by default')
      for (const s of spec.steps) assert.equal(new Set(s.experts).size, 2)
    })
  }

  it('temperature 0, pipelined rounds with rejections: rounds discarded, rolled back, and the text still identical', async () => {
    // the model drafter's continuation with every 5th position of the text made wrong: rounds
    // are pipelined behind drafts that will be rejected, so some are discarded
    const wrong: Drafter = {
      name: 'wrong-every-5th',
      propose: async (context, n) => (await drafter.propose(context, n)).map((t, i) => (context.length + i) % 5 === 4 ? (t + 1) % tokenizer.vocabSize : t),
      close: async () => {}
    }
    const pipelined = new Router(node, tokenizer, { drafter: wrong, ...FRESH })
    const serial = new Router(node, tokenizer, { drafter: wrong, pipelineRounds: false, ...FRESH })
    const base = await router.generate('The kernel', { k: 2, maxTokens: 40, temperature: 0, experts: ids, ignoreEos: true })
    const p = await pipelined.generate('The kernel', { k: 2, maxTokens: 40, temperature: 0, experts: ids, ignoreEos: true, speculative: true })
    const q = await serial.generate('The kernel', { k: 2, maxTokens: 40, temperature: 0, experts: ids, ignoreEos: true, speculative: true })
    assert.equal(p.text, base.text)
    assert.equal(q.text, base.text)
    assert.ok(p.speculation != null && q.speculation != null)
    assert.ok(p.speculation.pipelined > 0, 'rounds were pipelined')
    assert.ok(p.speculation.discarded > 0, 'pipelined rounds behind a rejected token were discarded')
    assert.ok(p.speculation.accepted < p.speculation.drafted)
    assert.equal(q.speculation.pipelined, 0)
    assert.equal(q.speculation.discarded, 0)
  })

  it("temperature 0 with the 'local' tail (the router's own model shapes the unlisted mass at every draft position): identical text", async () => {
    const localModel = await LocalModel.load('meshtest-c', { expect: tokenizer })
    try {
      const local = new Router(node, tokenizer, { drafter, localModel, ...FRESH })
      const base = await local.generate('The kernel', { k: 2, maxTokens: 32, temperature: 0, experts: ids, ignoreEos: true })
      const spec = await local.generate('The kernel', { k: 2, maxTokens: 32, temperature: 0, experts: ids, ignoreEos: true, speculative: true })
      assert.equal(spec.text, base.text)
      assert.ok(spec.speculation != null && spec.speculation.pipelined > 0)
    } finally {
      await localModel.close()
    }
  })

  it('temperature 0, K=1 per round with reselection: identical to the same single expert without speculation', async () => {
    const base = await router.generate('git', { k: 1, maxTokens: 32, temperature: 0, experts: [ids[0]], ignoreEos: true })
    const spec = await router.generate('git', { k: 1, maxTokens: 32, temperature: 0, experts: [ids[0]], ignoreEos: true, speculative: true })
    assert.equal(spec.text, base.text)
  })

  it('sampling at temperature 0.8 with speculation completes with an acceptance rate in (0, 1]', async () => {
    const r = await router.generate('The kernel', { k: 2, maxTokens: 40, temperature: 0.8, seed: 5, experts: ids, ignoreEos: true, speculative: true })
    assert.equal(r.tokens, 40)
    const s = r.speculation!
    assert.ok(s.drafted > 0 && s.accepted >= 0 && s.accepted <= s.drafted)
  })

  it('works with the n-gram drafter too (identical greedy text)', async () => {
    const r2 = new Router(node, tokenizer, { drafter: new NgramDrafter(), ...FRESH })
    const base = await r2.generate('the the the', { k: 2, maxTokens: 24, temperature: 0, experts: ids, ignoreEos: true })
    const spec = await r2.generate('the the the', { k: 2, maxTokens: 24, temperature: 0, experts: ids, ignoreEos: true, speculative: true })
    assert.equal(spec.text, base.text)
  })
})
