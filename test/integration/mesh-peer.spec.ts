/**
 * MeshPeer, the composition root: an expert peer and a routing-only peer in this process
 * (real libp2p nodes, a real model), one generation, one HALT reaching both through the one
 * hookup, and a stop that releases everything.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { MeshPeer, MeshPeerConfigError } from '../../src/peer/mesh-peer.js'
import { defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { lockDataDir, taskDbPath } from '../../src/node/data-dir.js'
import { Tier } from '../../src/governance/tiers.js'
import { waitFor } from '../helpers/wait.js'

describe('MeshPeer: one composition root for expert and routing peers', function () {
  this.timeout(120_000)
  let dir: string
  let keys: PrivateKey[]
  let governance: GovernanceConfig
  const peers: MeshPeer[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshllm-peer-'))
    keys = await Promise.all([1, 2, 3].map(async () => await generateKeyPair('Ed25519')))
    governance = { meshId: `peer-test-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 3_600_000, revertOnHalt: 3 }
  })

  after(async () => {
    for (const p of peers) await p.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses an expert without a data directory, before loading anything', async () => {
    await assert.rejects(MeshPeer.start({ expert: { model: 'meshtest-c' }, governance }), (err: any) => err.name === MeshPeerConfigError.name)
  })

  it('an expert peer and a routing-only peer: generate, one HALT reaches both, stop releases everything', async () => {
    const expertDir = join(dir, 'expert')
    const expert = await MeshPeer.start({ expert: { model: 'meshtest-c', threads: 1 }, dataDir: expertDir, governance, catchUpMs: 500, api: { http: '127.0.0.1:0' } })
    peers.push(expert)
    assert.ok(expert.expert != null)
    // the data directory is this process's while the peer runs
    assert.throws(() => lockDataDir(expertDir), (err: any) => err.name === 'DataDirInUseError')
    // its own router uses its own expert, in process (discovery never lists the node itself):
    // three generations at once, one more than the per-peer quota (2), which is for remote peers
    const self = expert.node.peerId.toString()
    const dialsBefore = expert.node.getConnections().length
    const own = await Promise.all([1, 2, 3].map(async () => await expert.router.generate('The kernel', { k: 1, maxTokens: 4, temperature: 0, ignoreEos: true })))
    for (const r of own) {
      assert.equal(r.tokens, 4)
      assert.deepEqual(r.experts, [self])
      assert.equal(r.text, own[0].text)
    }
    assert.equal(expert.expert.service.stats.sessionsRefused, 0)
    assert.equal(expert.node.getConnections().length, dialsBefore, 'no connection was opened')
    // the API's task table is the data directory's one file (`meshllm agent`/`tasks` open it by default for join's default directory)
    assert.equal(expert.api!.api.tasks.store.path, taskDbPath(expertDir))
    const addr = expert.node.getMultiaddrs()[0].toString()
    const router = await MeshPeer.start({ bootstrap: [addr], governance, catchUpMs: 2_000 })
    peers.push(router)
    assert.equal(router.expert, undefined)
    await waitFor(async () => (await router.router.experts(true)).compatible.length === 1, 30_000, 'the routing peer to find the expert')
    const r = await router.router.generate('The kernel', { k: 1, maxTokens: 8, temperature: 0, ignoreEos: true })
    assert.equal(r.tokens, 8)
    assert.deepEqual(r.experts, [expert.node.peerId.toString()])
    // one /metrics: ours and libp2p's own (the connection the router opened to this expert)
    const scrape = await (await fetch(`http://127.0.0.1:${expert.api!.httpPort!}/metrics`)).text()
    assert.match(scrape, /^meshllm_/m)
    assert.match(scrape, /^libp2p_connection_manager_connections\{[^}]*\} [1-9]/m)

    // a change the expert recorded is reverted by the HALT, through the same hookup
    let undone = 0
    expert.changes!.record({ id: 'c1', description: 'test change', tier: Tier.DEPLOY_MINOR, appliedAtMs: Date.now() }, () => { undone++ })
    const halts: string[] = []
    const unsubscribe = router.on('halt', reason => halts.push(`router:${reason}`))
    expert.on('halt', reason => halts.push(`expert:${reason}`))
    const reverted = new Promise(resolve => expert.on('revert', resolve))
    // a long generation in flight when the HALT comes
    let firstToken!: () => void
    const started = new Promise<void>(resolve => { firstToken = resolve })
    const inFlight = router.router.generate('The kernel', { k: 1, maxTokens: 4_000, temperature: 0, ignoreEos: true, onToken: () => firstToken() }).then(() => undefined, (err: unknown) => err)
    await started
    const now = Date.now()
    const halt = await createEnvelope({ kind: Kind.HALT, reason: 'mesh-peer test', meshId: governance.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [keys[0]])
    const submitted = await router.governance.submit(halt)
    assert.equal(submitted.applied, true)
    assert.equal((await inFlight as Error | undefined)?.name, 'HaltedError')
    await waitFor(async () => halts.length === 2, 10_000, 'both peers to apply the HALT')
    assert.deepEqual(halts.sort(), ['expert:mesh-peer test', 'router:mesh-peer test'])
    await reverted
    assert.equal(undone, 1)
    unsubscribe()

    // stop: reverse order, idempotent, the data directory free again
    await Promise.all([expert.stop(), expert.stop()])
    assert.equal(expert.node.status, 'stopped')
    const release = lockDataDir(expertDir)
    release()
  })
})
