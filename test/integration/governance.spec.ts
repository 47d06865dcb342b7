/**
 * Governance on a real mesh: 2 expert processes + 19 in-process nodes (routers among them)
 * on loopback. A keyholder HALT reaches every node, every in-flight generation ends with
 * "halted by governance", experts refuse sessions, a halted expert stays halted across a
 * restart, and a 2-of-3 RESUME lifts it. Reports the propagation time.
 */
import assert from 'node:assert/strict'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router, verifyHaltWith } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { configToJson, defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GovernanceService } from '../../src/governance/service.js'
import { waitFor } from '../helpers/wait.js'

interface LightNode { node: MeshNode, gov: GovernanceService, haltedAt?: number }

describe('governance on a 21-node mesh', function () {
  this.timeout(180_000)
  const experts: SpawnedExpert[] = []
  const light: LightNode[] = []
  let keys: PrivateKey[]
  let config: GovernanceConfig
  let govFile: string
  let dataDirs: string[]
  let tokenizer: RouterTokenizer
  const routers: Router[] = []

  before(async () => {
    keys = await Promise.all([1, 2, 3].map(async () => generateKeyPair('Ed25519')))
    config = {
      meshId: `gov-test-${Date.now()}`,
      keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })),
      thresholds: defaultThresholds(3),
      reviewPeriodMs: 24 * 3_600_000,
      revertOnHalt: 3
    }
    const dir = await mkdtemp(join(tmpdir(), 'meshllm-gov-'))
    govFile = join(dir, 'governance.json')
    await writeFile(govFile, JSON.stringify(configToJson(config)))
    dataDirs = [join(dir, 'e1'), join(dir, 'e2')]
    const a = await spawnExpert('meshtest-c', ['--governance', govFile, '--data-dir', dataDirs[0]])
    experts.push(a)
    experts.push(await spawnExpert('meshtest-b', ['--governance', govFile, '--data-dir', dataDirs[1], '--bootstrap', a.addr]))
    tokenizer = await RouterTokenizer.load('meshtest-c')
    // 19 lightweight nodes in this process, each bootstrapped to an expert and one earlier node
    for (let i = 0; i < 19; i++) {
      const node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
      await node.start()
      const gov = new GovernanceService(node, new GovernanceState(config))
      await gov.start()
      const boot = [experts[i % 2].addr]
      if (i > 0) boot.push(light[Math.floor(Math.random() * i)].node.getMultiaddrs()[0].toString())
      await connectBootstrap(node, boot)
      const ln: LightNode = { node, gov }
      gov.on({ onHalt: () => { ln.haltedAt ??= Date.now() } })
      light.push(ln)
    }
    // two of them route
    for (const ln of light.slice(0, 2)) {
      const r = new Router(ln.node, tokenizer, { haltReason: () => ln.gov.haltReason })
      ln.gov.on({ onHalt: (reason) => r.abortAll(reason) })
      routers.push(r)
    }
    // wait for the gossipsub topic mesh to form
    await waitFor(() => light.every(ln => (ln.node.services.pubsub as any).getSubscribers(ln.gov.topic).length > 0), 20_000, 'topic peers')
    for (const r of routers) await waitFor(async () => (await r.experts(true)).compatible.length >= 2, 20_000, 'experts on the DHT')
  })

  after(async () => {
    await tokenizer?.close()
    for (const ln of light) { await ln.gov.stop(); await ln.node.stop() }
    await Promise.all(experts.map(stopExpert))
  })

  it('a HALT from one keyholder reaches all 21 nodes, ends in-flight generations, and is reported with its propagation time', async () => {
    // in-flight generations on both routers
    // in flight: the HALT comes after each generation's first token
    const started = routers.map(() => { let go!: () => void; const p = new Promise<void>(resolve => { go = resolve }); return { p, go } })
    const inflight = routers.map(async (r, i) => r.generate('The kernel', { k: 2, maxTokens: 400, ignoreEos: true, onToken: () => started[i].go() }).then(() => undefined, (err: any) => err))
    await Promise.all(started.map(s => s.p))
    const now = Date.now()
    const halt = await createEnvelope({ kind: Kind.HALT, reason: 'integration test', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [keys[2]])
    const publisher = light[light.length - 1]
    const t0 = Date.now()
    const pub = await publisher.gov.publish(halt)
    assert.equal(pub.accepted, true, pub.reason)
    assert.ok(pub.recipients > 0, 'published to some peers')
    await waitFor(() => light.every(ln => ln.haltedAt != null), 5_000, 'every in-process node halted')
    await waitFor(() => experts.every(e => /HALTED by governance: integration test \(at (\d+)\)/.test(e.stderr())), 5_000, 'every expert halted')
    const expertTimes = experts.map(e => Number(/HALTED by governance: integration test \(at (\d+)\)/.exec(e.stderr())![1]))
    const times = [...light.map(ln => ln.haltedAt! - t0), ...expertTimes.map(t => t - t0)]
    const last = Math.max(...times)
    process.stdout.write(`      HALT propagation over ${times.length} nodes: median ${times.sort((x, y) => x - y)[Math.floor(times.length / 2)]} ms, last node ${last} ms\n`)
    const errors = await Promise.all(inflight)
    for (const err of errors) {
      assert.ok(err != null, 'the generation ended')
      assert.equal(err.name, 'HaltedError')
      assert.match(err.message, /^halted by governance: integration test/)
    }
    // nothing new starts anywhere
    await assert.rejects(routers[0].generate('x', { maxTokens: 2 }), (e: any) => e.name === 'HaltedError')
  })

  it('an expert refuses sessions from a router that has not heard of the HALT (status HALTED + the signed HALT): the router verifies it and halts itself', async () => {
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    try {
      await connectBootstrap(node, [experts[0].addr])
      // no governance here: an expert's HALTED is that expert's failure (only a router's own governance halts it)
      const bare = new Router(node, tokenizer)
      await waitFor(async () => (await bare.experts(true)).compatible.length >= 1, 20_000, 'experts')
      await assert.rejects(bare.generate('The kernel', { k: 1, maxTokens: 4 }), { name: 'NoExpertsError' })
      // a fresh governance state (not started: it hears nothing): the HALT comes with the expert's answer
      const gov = new GovernanceService(node, new GovernanceState(config))
      const r = new Router(node, tokenizer, { haltReason: () => gov.haltReason, verifyHalt: verifyHaltWith(gov) })
      await assert.rejects(r.generate('The kernel', { k: 1, maxTokens: 4 }), { name: 'HaltedError' })
      assert.equal(gov.haltReason, 'integration test')
    } finally {
      await node.stop()
    }
  })

  it('replaying the HALT is rejected by every node (persisted version, not the seen-cache)', async () => {
    const before = light.map(ln => ln.gov.state.rejected.replay)
    const r = await light[3].gov.state.apply(light[3].gov.state.catchUp()[0])
    assert.equal(r.accepted, false)
    assert.ok(light[3].gov.state.rejected.replay > before[3])
  })

  it('a halted expert stays halted across a restart', async () => {
    await stopExpert(experts[1])
    experts[1] = await spawnExpert('meshtest-b', ['--governance', govFile, '--data-dir', dataDirs[1], '--bootstrap', experts[0].addr])
    assert.match(experts[1].stderr(), /HALTED: integration test/)
  })

  it('a forged RESUME (one keyholder, threshold 2) is rejected; a 2-of-3 RESUME lifts the halt everywhere', async () => {
    const halted = light[0].gov.state.halted!
    const mk = async (signers: PrivateKey[]): Promise<Uint8Array> => {
      const now = Date.now()
      return await createEnvelope({ kind: Kind.RESUME, liftsVersion: halted.version, reason: 'ok', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, signers)
    }
    const forged = await light[5].gov.publish(await mk([keys[0]]))
    assert.equal(forged.accepted, false)
    const ok = await light[5].gov.publish(await mk([keys[0], keys[1]]))
    assert.equal(ok.accepted, true)
    await waitFor(() => light.every(ln => ln.gov.haltReason == null), 5_000, 'every node resumed')
    await waitFor(() => experts.every(e => /resumed by governance/.test(e.stderr())), 10_000, 'experts resumed')
    const r = await routers[0].generate('The kernel', { k: 2, maxTokens: 8, ignoreEos: true })
    assert.equal(r.tokens, 8)
    assert.equal(light[0].gov.state.readOnly, true, 'read-only until a phase vote')
  })
})
