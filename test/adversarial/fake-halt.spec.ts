/**
 * Issue 10 §2: an expert cannot fake a governance halt. Real nodes on loopback: two honest
 * expert processes (meshtest-a, meshtest-b), one in-process expert answering HALTED
 * (test/helpers/liar-expert.ts, mode 'fakehalt': the expert's own HALTED code path), and a
 * router with its own governance (verifyHalt → GovernanceService.ingest). Only the router's
 * own verified governance state may end a generation as halted; an expert's HALTED without a
 * HALT the router verifies is a failure of that expert (UnverifiedHaltError), counted, and the
 * expert is not asked again.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { SpawnedExpert } from '../../src/peer/spawn.js'
import type { MeshNode } from '../../src/node/node.js'
import { Router, verifyHaltWith } from '../../src/router/router.js'
import type { RouterTokenizer } from '../../src/router/tokenizer.js'
import { defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, encodeEnvelope, encodePayload, Kind, type Message } from '../../src/governance/envelope.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GovernanceService } from '../../src/governance/service.js'
import { startLiar, type LiarExpert } from '../helpers/liar-expert.js'
import { waitFor } from '../helpers/wait.js'
import { startRouterNode, startTwoExperts, type RouterNode, type TwoExperts } from '../helpers/mesh.js'

const PROMPT = 'The kernel'

describe('adversarial: an expert cannot fake a governance halt', function () {
  this.timeout(120_000)
  let a: SpawnedExpert
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let keys: PrivateKey[]
  let config: GovernanceConfig
  let experts: TwoExperts | undefined
  let routerNode: RouterNode | undefined
  const liars: LiarExpert[] = []
  const honest = (): string[] => experts!.honest()

  before(async function () {
    this.timeout(120_000)
    keys = await Promise.all([1, 2, 3].map(async () => await generateKeyPair('Ed25519')))
    config = {
      meshId: `fake-halt-${Date.now()}`,
      keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })),
      thresholds: defaultThresholds(3),
      reviewPeriodMs: 24 * 3_600_000,
      revertOnHalt: 3
    }
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

  /** a HALT of this test's mesh, signed by the given keys */
  const haltMessage = (reason: string): Message => ({ kind: Kind.HALT, reason, meshId: config.meshId, version: Date.now(), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 3_600_000 })

  /** an expert answering HALTED (with `haltEnvelope`), and a router with its own governance that sees it and both honest experts */
  async function setup (haltEnvelope?: Uint8Array): Promise<{ liar: LiarExpert, router: Router, gov: GovernanceService, failures: Array<{ name?: string }> }> {
    const liar = await startLiar('fakehalt', { bootstrap: [a.addr], haltEnvelope })
    liars.push(liar)
    // the router's governance: the state it verifies against (not started: nothing to gossip here)
    const gov = new GovernanceService(node, new GovernanceState(config))
    const router = new Router(node, tokenizer, { requestTimeoutMs: 10_000, haltReason: () => gov.haltReason, verifyHalt: verifyHaltWith(gov) })
    gov.on({ onHalt: (reason) => router.abortAll(reason) })
    const failures: Array<{ name?: string }> = []
    router.observers.add({ onExpertRequest: ev => { if (!ev.ok && ev.expert === liar.id) failures.push({ name: ev.errorName }) } })
    await waitFor(async () => {
      const ids = (await router.experts(true)).compatible.map(r => r.peerId.toString())
      return [...honest(), liar.id].every(id => ids.includes(id))
    }, 30_000, 'the DHT to list both honest experts and the halting expert')
    return { liar, router, gov, failures }
  }

  /** K = 3 of exactly {a, b, liar}: the liar is asked at the first step */
  async function generateAround (router: Router, liar: LiarExpert): Promise<Awaited<ReturnType<Router['generate']>>> {
    return await router.generate(PROMPT, { k: 3, temperature: 0, seed: 1, maxTokens: 12, ignoreEos: true, experts: [...honest(), liar.id] })
  }

  function assertCountedFailure (r: Awaited<ReturnType<Router['generate']>>, router: Router, liar: LiarExpert, failures: Array<{ name?: string }>, gov: GovernanceService): void {
    assert.equal(r.tokens, 12, 'the generation completed with the other experts')
    assert.ok(r.steps.every(st => !st.experts.includes(liar.id)), 'the halting expert never counted in a step')
    assert.ok(r.steps.every(st => st.experts.length === 2), 'every step got both honest frames')
    assert.deepEqual(failures.map(f => f.name), ['UnverifiedHaltError'], 'asked once, failed once by name, never asked again in this generation')
    assert.ok(router.health.get(liar.id).failures >= 1, 'the failure is counted against the expert')
    assert.equal(router.health.get(liar.id).consecutiveFailures, 1, 'its circuit opened (backoff from the first failure)')
    assert.equal(gov.haltReason, undefined, "the router's governance is not halted")
  }

  it('an expert answering HALTED without a signed HALT: its failure, the generation completes with the others', async () => {
    const { liar, router, gov, failures } = await setup()
    const r = await generateAround(router, liar)
    assertCountedFailure(r, router, liar, failures, gov)
  })

  it('an expert answering HALTED with a forged HALT (a keyholder key, junk signature): its failure, the router is not halted', async () => {
    const payload = encodePayload(haltMessage('forged halt'))
    const forged = encodeEnvelope(payload, [{ publicKey: keys[0].publicKey.raw, signature: Uint8Array.from(randomBytes(64)) }])
    const { liar, router, gov, failures } = await setup(forged)
    const r = await generateAround(router, liar)
    assertCountedFailure(r, router, liar, failures, gov)
    assert.equal(gov.state.halted, undefined)
  })

  it('an expert answering HALTED with a HALT signed by a non-keyholder: its failure, the router is not halted', async () => {
    const outsider = await generateKeyPair('Ed25519')
    const { liar, router, gov, failures } = await setup(await createEnvelope(haltMessage('outsider halt'), [outsider]))
    const r = await generateAround(router, liar)
    assertCountedFailure(r, router, liar, failures, gov)
  })

  it('an expert holding a valid signed HALT the router has not heard of: the router verifies it, applies it itself and ends halted', async () => {
    const { liar, router, gov } = await setup(await createEnvelope(haltMessage('real halt relayed by an expert'), [keys[0]]))
    await assert.rejects(generateAround(router, liar), { name: 'HaltedError' })
    assert.equal(gov.haltReason, 'real halt relayed by an expert', "the HALT is applied to the router's own governance state")
    // the router is halted now, by its own state: nothing generates, whichever experts are asked
    await assert.rejects(router.generate(PROMPT, { k: 2, maxTokens: 2, experts: honest() }), { name: 'HaltedError' })
  })
})
