/**
 * Byzantine experts (docs/quality.md "Byzantine experts") on loopback TCP: two honest expert
 * processes (meshtest-a, meshtest-b) and one in-process liar (test/helpers/liar-expert.ts).
 * Deterministic: temperature 0, fixed seeds; nothing asserts on timing.
 */
import assert from 'node:assert/strict'
import type { SpawnedExpert } from '../../src/peer/spawn.js'
import type { MeshNode } from '../../src/node/node.js'
import { Router, type GenerateOptions } from '../../src/router/router.js'
import { OnlineWeights } from '../../src/router/online-weights.js'
import type { RouterTokenizer } from '../../src/router/tokenizer.js'
import type { Aggregated } from '../../src/aggregate/types.js'
import { startLiar, type LiarExpert, type LiarMode, type LiarOptions } from '../helpers/liar-expert.js'
import { waitFor } from '../helpers/wait.js'
import { startSybils } from '../helpers/sybil.js'
import { startRouterNode, startTwoExperts, type RouterNode, type TwoExperts } from '../helpers/mesh.js'

const PROMPT = 'The kernel'
const POSITIONS = 100

describe('Byzantine experts (2 honest processes + 1 in-process liar)', function () {
  this.timeout(90_000)
  let a: SpawnedExpert
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let experts: TwoExperts | undefined
  let routerNode: RouterNode | undefined
  const liars: LiarExpert[] = []
  const honest = (): string[] => experts!.honest()

  before(async function () {
    this.timeout(120_000)
    experts = await startTwoExperts()
    a = experts.a
    routerNode = await startRouterNode([a.addr])
    ;({ node, tokenizer } = routerNode)
  })

  after(async function () {
    this.timeout(30_000)
    for (const l of liars) await l.stop().catch(() => {})
    await routerNode?.stop()
    await experts?.stop()
  })

  /** a liar on the mesh and a fresh router (fresh reputation) that sees all three */
  async function withLiar (mode: LiarMode, opts: LiarOptions = {}, routerOpts: ConstructorParameters<typeof Router>[2] = {}): Promise<{ liar: LiarExpert, router: Router }> {
    const liar = await startLiar(mode, { bootstrap: [a.addr], ...opts })
    liars.push(liar)
    const router = new Router(node, tokenizer, { requestTimeoutMs: 10_000, ...routerOpts })
    await waitFor(async () => {
      const ids = (await router.experts(true)).compatible.map(r => r.peerId.toString())
      return [...honest(), liar.id].every(id => ids.includes(id))
    }, 30_000, 'the DHT to list both honest experts and the liar')
    return { liar, router }
  }

  /** per position: the honest ensemble's (a + b under `rule`) argmax on the same prefix (teacher forcing) */
  async function honestArgmax (tokens: number[], rule: 'mixture' | 'median' | 'trimmed' = 'mixture'): Promise<number[]> {
    const router = new Router(node, tokenizer, { requestTimeoutMs: 10_000 })
    const argmax: number[] = []
    const V = tokenizer.vocabSize
    const r = await router.generate(PROMPT, {
      k: 2,
      experts: honest(),
      rule,
      reputation: false,
      temperature: 0,
      seed: 1,
      maxTokens: tokens.length,
      ignoreEos: true,
      constrain: (agg: Aggregated, generated: number[]): Aggregated => {
        // as the generation under test (ignoreEos): the best token that does not end it
        argmax.push([...agg.ids].find(t => !tokenizer.isEndOfGeneration(t)) ?? agg.ids[0])
        const forced = tokens[generated.length]
        return { ids: Uint32Array.of(forced), probs: Float64Array.of(1), restProb: 0, restCount: V - 1 }
      }
    })
    assert.equal(r.tokens, tokens.length)
    assert.ok(r.steps.every(s => s.experts.length === 2), 'both honest experts served every reference step')
    return argmax
  }

  async function robustRun (mode: LiarMode, rule: 'median' | 'trimmed'): Promise<void> {
    const { liar, router } = await withLiar(mode, { seed: 11 })
    const tokens: number[] = []
    const opts: GenerateOptions = { k: 3, rule, temperature: 0, seed: 1, maxTokens: POSITIONS, ignoreEos: true, experts: [...honest(), liar.id], onToken: t => tokens.push(t.token) }
    const errors: string[] = []
    router.observers.add({ onExpertRequest: ev => { if (!ev.ok && ev.expert === liar.id) errors.push(ev.error ?? '') } })
    const r = await router.generate(PROMPT, opts)
    if (errors.length > 0) console.log('      liar errors:', errors.slice(0, 3))
    assert.equal(r.tokens, POSITIONS)
    // the honest ensemble under the same rule (the liar's influence alone) and under 'mixture'
    // (the liar's influence plus the rule's own difference: with two experts median and
    // trimmed mean are the geometric mean, whose argmax sometimes differs from the mixture's)
    const ref = await honestArgmax(tokens, rule)
    const refMixture = await honestArgmax(tokens, 'mixture')
    let agree = 0
    let agreeMixture = 0
    for (let i = 0; i < POSITIONS; i++) {
      if (ref[i] === tokens[i]) agree++
      if (refMixture[i] === tokens[i]) agreeMixture++
    }
    const rep = router.reputation.get(liar.id)
    const honestRep = honest().map(id => router.reputation.get(id))
    console.log(`      ${mode}/${rule}: agreement ${agree}/${POSITIONS} with honest a+b ${rule}, ${agreeMixture}/${POSITIONS} with honest a+b mixture; liar banned after ${rep.framesAtFirstBan ?? '-'} frames (D=${rep.disagreement.toFixed(3)}), honest D ${honestRep.map(h => h.disagreement.toFixed(3)).join(', ')}, honest bans ${honestRep.map(h => h.bans).join(', ')}`)
    assert.ok(agree >= 0.99 * POSITIONS, `top token agrees with the honest ensemble (${rule}) on ${agree}/${POSITIONS} positions`)
    assert.ok(agreeMixture >= 0.85 * POSITIONS, `top token agrees with the honest mixture on ${agreeMixture}/${POSITIONS} positions`)
    assert.ok(rep.bans >= 1 && rep.framesAtFirstBan != null && rep.framesAtFirstBan <= 100, `liar banned within 100 frames (after ${rep.framesAtFirstBan})`)
    assert.ok(honestRep.every(h => h.bans === 0), 'no honest expert banned')
    // once banned, the liar serves no further step
    const served = r.steps.filter(s => s.experts.includes(liar.id)).length
    assert.ok(served <= (rep.framesAtFirstBan ?? 0), `the liar served ${served} steps, banned after ${rep.framesAtFirstBan} frames`)
    assert.ok(router.reputation.banned(liar.id))
  }

  it("a liar promoting one token: 'median' with reputation agrees with the honest ensemble on ≥ 99 % of positions, the liar is banned", async () => {
    await robustRun('promote', 'median')
  })

  it("a liar sending random frames on every step: 'trimmed' agrees with the honest ensemble, the liar is banned within 100 frames", async () => {
    await robustRun('random', 'trimmed')
  })

  it("a liar inverting every distribution: 'median' agrees with the honest ensemble, the liar is banned within 100 frames", async () => {
    await robustRun('invert', 'median')
  })

  it("a liar replaying old frames: 'trimmed' agrees with the honest ensemble, the liar is banned within 100 frames", async () => {
    await robustRun('replay', 'trimmed')
  })

  it("control: a third honest but much weaker expert (meshtest-c) under 'median' is screened out rarely and never banned", async () => {
    const { liar: c, router } = await withLiar('honest', { seed: 11 })
    let screened = 0
    let asked = 0
    const r = await router.generate(PROMPT, { k: 3, rule: 'median', temperature: 0, seed: 1, maxTokens: POSITIONS, ignoreEos: true, experts: [...honest(), c.id] })
    for (const s of r.steps) { if (s.experts.includes(c.id)) asked++ }
    screened = router.reputation.get(c.id).screened
    const rep = [...honest(), c.id].map(id => router.reputation.get(id))
    console.log(`      honest control: meshtest-c served ${asked}/${POSITIONS} steps, screened out of ${screened}; D ${rep.map(x => x.disagreement.toFixed(3)).join(', ')}; bans ${rep.map(x => x.bans).join(', ')}`)
    assert.equal(r.tokens, POSITIONS)
    assert.ok(rep.every(x => x.bans === 0), 'no honest expert banned')
    assert.ok(screened <= 0.3 * asked, `meshtest-c screened out of ${screened} of ${asked} steps`)
    // the 'online' weighting (the default) left its record of every expert in the router's
    // memory for its next generations: the weaker meshtest-c weighs least there
    const [a, b] = honest()
    const mem = [a, b, c.id].map(id => router.expertMemory.get(id))
    assert.ok(mem.every(m => m != null && m.n >= asked / 2 && m.n <= POSITIONS && Number.isFinite(m.evidence)), JSON.stringify(mem))
    const next = new OnlineWeights(router.expertMemory).weights([a, b, c.id])
    assert.ok(next[2] < Math.min(next[0], next[1]), `weights ${next.join(', ')}`)
  })

  for (const [mode, expected] of [['malformed', /MalformedMessageError|InvalidFrameError/], ['oversized', /InvalidDataLengthError/], ['badmass', /InvalidFrameError/]] as const) {
    it(`a liar breaking the wire format (${mode}): refused with a named error, dropped, never counted; the generation completes`, async () => {
      const { liar, router } = await withLiar(mode)
      const errors: string[] = []
      router.observers.add({ onExpertRequest: ev => { if (!ev.ok && ev.expert === liar.id) errors.push(`${ev.errorName}: ${ev.error}`) } })
      const r = await router.generate(PROMPT, { k: 2, temperature: 0, seed: 1, maxTokens: 20, ignoreEos: true, policy: 'random', experts: [...honest(), liar.id] })
      console.log(`      ${mode}: ${errors.length} failed request(s): ${[...new Set(errors.map(e => e.slice(0, 90)))].join(' | ')}`)
      assert.equal(r.tokens, 20)
      assert.ok(r.steps.every(st => st.experts.length === 2 && !st.experts.includes(liar.id)), 'every step got K=2 honest frames; the liar never counted')
      assert.ok(liar.corrupted > 0 && errors.length > 0, 'the liar was asked and failed')
      for (const e of errors) assert.match(e, expected)
      if (mode === 'badmass') assert.ok(router.reputation.get(liar.id).frames > 0, 'an invalid frame counts against its reputation')
    })
  }

  it('a stalling expert (slowloris) does not stall generation: it is hedged and dropped, never counted', async () => {
    const { liar, router } = await withLiar('stall', { stallMs: 4_000 })
    const r = await router.generate(PROMPT, { k: 2, temperature: 0, seed: 1, maxTokens: 20, ignoreEos: true, policy: 'random', experts: [...honest(), liar.id] })
    assert.equal(r.tokens, 20)
    assert.ok(r.steps.every(s => s.experts.length === 2), 'every step got K=2 frames (hedged)')
    assert.ok(r.steps.every(s => !s.experts.includes(liar.id)), 'the stalled frames never counted')
    assert.ok(r.steps.some(s => s.dropped.includes(liar.id)), 'the liar was asked and dropped')
  })

  it('100 Sybil identities on one address (one machine, one model) claiming 10× capacity get ≤ 5 % of the steps', async function () {
    this.timeout(420_000)
    // a mesh of its own: two fresh honest experts and a fresh router node, so the provider
    // records this file's earlier (stopped) liars left in the first mesh's DHT (kept up to
    // 24 h) are not part of this measurement; discovery through them is issue 13's (routers
    // must sample, not enumerate)
    const mesh = await startTwoExperts()
    const own = await startRouterNode([mesh.a.addr]).catch(async (err) => { await mesh.stop(); throw err })
    // the Sybils run meshtest-a, the larger honest model: as fast as honest expert a, not faster
    const sybils = await startSybils(100, { model: 'meshtest-a', bootstrap: [mesh.a.addr], capacityFactor: 10 }).catch(async (err) => { await own.stop(); await mesh.stop(); throw err })
    try {
      const want = [...mesh.honest(), ...sybils.ids]
      const seen = async (router: Router): Promise<number> => (await router.experts(true)).compatible.filter(r => want.includes(r.peerId.toString())).length
      // the two routers compared (with and without the colocation penalty) discover together:
      // a router keeps every record it has fetched until it expires, so each poll only adds
      const routers = [undefined, Infinity].map(colocationThreshold => new Router(own.node, own.tokenizer, { requestTimeoutMs: 10_000, discoveryTimeoutMs: 15_000, colocationThreshold }))
      const t0 = Date.now()
      await waitFor(async () => (await Promise.all(routers.map(seen))).every(n => n >= want.length), 270_000, 'both routers to know the 2 honest experts and the 100 Sybils')
      console.log(`      both routers knew all 102 identities after ${((Date.now() - t0) / 1000).toFixed(0)} s`)
      // the defence in the state it is designed for: the router has generated with the honest
      // experts (connected, latency measured) and has observed every identity's address (here:
      // one connection each). With only a few Sybils observed, a fresh router gave them 28–36 %
      // of the steps in two of four runs (the observed group is small, its penalty mild): an open
      // weakness, docs/quality.md §8
      for (const router of routers) await router.generate(PROMPT, { k: 2, temperature: 0, maxTokens: 8, experts: mesh.honest() })
      await Promise.all(sybils.nodes.map(async nd => { await own.node.dial(nd.getMultiaddrs()[0]) }))
      const share = async (router: Router): Promise<{ share: number, servedBy: number }> => {
        const r = await router.generate(PROMPT, { k: 2, temperature: 0, seed: 1, maxTokens: 100, ignoreEos: true, experts: want })
        assert.equal(r.tokens, 100)
        const slots = r.steps.reduce((n, st) => n + st.experts.length, 0)
        const bySybil = r.steps.reduce((n, st) => n + st.experts.filter(id => sybils.ids.includes(id)).length, 0)
        const ids = new Set(r.steps.flatMap(st => st.experts.filter(id => sybils.ids.includes(id))))
        return { share: bySybil / slots, servedBy: ids.size }
      }
      const defended = await share(routers[0])
      const undefended = await share(routers[1])
      console.log(`      100 Sybils (claimed ${Math.round(sybils.claimedTokensPerSecond)} tok/s): ${(100 * defended.share).toFixed(1)} % of expert steps (${defended.servedBy} identities); without the colocation penalty ${(100 * undefended.share).toFixed(1)} %`)
      assert.ok(defended.share <= 0.05, `Sybil share ${(100 * defended.share).toFixed(1)} %`)
      assert.ok(undefended.share > 0.5, `without the penalty the Sybils take most steps (${(100 * undefended.share).toFixed(1)} %): the test measures something`)
    } finally {
      await sybils.stop()
      await own.stop()
      await mesh.stop()
    }
  })

  it('a 10×-capacity claim gets no more than a fair share of steps when measured latency is no better', async () => {
    const { liar, router } = await withLiar('capacity', { capacityFactor: 10, delayMs: 150 })
    await waitFor(async () => {
      const rec = (await router.experts(true)).compatible.find(r => r.peerId.toString() === liar.id)
      return rec != null && rec.tokensPerSecond >= 5 * liar.expert.tokensPerSecond
    }, 20_000, 'the record to claim the inflated speed')
    const n = 45
    const r = await router.generate(PROMPT, { k: 1, temperature: 0, seed: 1, maxTokens: n, ignoreEos: true, policy: 'weighted', experts: [...honest(), liar.id] })
    assert.equal(r.tokens, n)
    const served = r.steps.filter(s => s.experts.includes(liar.id)).length
    console.log(`      capacity claim: liar served ${served}/${n} steps`)
    assert.ok(served <= n / 3, `the over-claiming expert served ${served} of ${n} steps (fair share ${n / 3})`)
  })
})
