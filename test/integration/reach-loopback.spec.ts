/**
 * Reach on loopback, with real libp2p nodes in this process: a mesh relay's limits at their
 * bounds (a peer cannot use it for unbounded unrelated traffic), and a bootstrap node that
 * restarts without splitting the mesh (same port from its data directory, peers redial it,
 * governance flows through it again).
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { connectBootstrap, createMeshNode, type MeshNode } from '../../src/node/node.js'
import { GovernanceService } from '../../src/governance/service.js'
import { GovernanceState } from '../../src/governance/state.js'
import { defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { waitFor } from '../helpers/wait.js'

const SINK = '/meshllm-test/sink/1.0.0'

describe('reach on loopback: relay limits and a bootstrap node restarting', function () {
  this.timeout(120_000)
  const nodes: MeshNode[] = []
  let dir: string

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'meshllm-reach-')) })
  after(async () => {
    for (const n of nodes) await Promise.resolve(n.stop()).catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  it('a mesh relay cuts a relayed connection at its data limit and refuses a peer\'s new relayed connections past its rate', async () => {
    const DATA_LIMIT = 256 * 1024
    const PER_MINUTE = 3
    const relay = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'], reach: { relay: { dataLimitBytes: DATA_LIMIT, connectsPerMinute: PER_MINUTE } } })
    const target = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'], reach: { relayReservations: 1 } })
    const client = await createMeshNode({ listen: [] })
    nodes.push(relay, target, client)
    let received = 0
    await target.handle(SINK, async (stream: Stream) => {
      try { for await (const chunk of stream) received += chunk.byteLength } catch {}
    }, { runOnLimitedConnection: true })
    await connectBootstrap(target, [relay.getMultiaddrs()[0].toString()])
    await waitFor(() => target.getMultiaddrs().some(a => a.toString().includes('/p2p-circuit')), 10_000, 'the target\'s reservation')
    const circuit = multiaddr(`${relay.getMultiaddrs()[0].toString()}/p2p-circuit/p2p/${target.peerId.toString()}`)

    // 1 MiB of unrelated traffic through one relayed connection: cut at the data limit
    const conn = await client.dial(circuit)
    assert.ok(conn.limits != null, 'a relayed connection through a mesh relay is limited')
    const stream = await conn.newStream(SINK, { runOnLimitedConnection: true })
    const chunk = new Uint8Array(16 * 1024)
    let sent = 0
    const ended = { closed: false }
    stream.addEventListener('close', () => { ended.closed = true }, { once: true })
    // send until the stream ends under us (the relay cut the connection) or 1 MiB went out
    while (sent < 1024 * 1024 && !ended.closed) {
      try {
        if (!stream.send(chunk)) await new Promise(resolve => { stream.addEventListener('drain', resolve, { once: true }); stream.addEventListener('close', resolve, { once: true }) })
      } catch { break }
      sent += chunk.byteLength
    }
    await waitFor(() => conn.status !== 'open', 10_000, 'the relay to close the connection')
    assert.ok(received <= DATA_LIMIT, `the target received ${received} bytes, more than the ${DATA_LIMIT} limit`)
    assert.ok(received >= chunk.byteLength, `only ${received} bytes got through`)
    console.log(`      ${sent} bytes sent, ${received} received before the relay cut the connection at ${DATA_LIMIT}`)

    // new relayed connections: at most PER_MINUTE per source peer (the one above counted); a
    // few more attempts, and at least one is refused
    let opened = 1
    let refused = 0
    for (let i = 0; i < PER_MINUTE + 2; i++) {
      try { await (await client.dial(circuit, { signal: AbortSignal.timeout(10_000) })).close(); opened++ } catch { refused++ }
    }
    assert.ok(refused > 0, `all ${opened} relayed connections admitted`)
    // another peer is not affected
    const other = await createMeshNode({ listen: [] })
    nodes.push(other)
    const ok = await other.dial(circuit)
    assert.equal(ok.status, 'open')
  })

  it('a bootstrap node restarts on the same port; its peers redial it and a HALT flows through it again', async () => {
    const keys = await Promise.all([1, 2, 3].map(async () => await generateKeyPair('Ed25519')))
    const config: GovernanceConfig = { meshId: `restart-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 }
    const bootDir = join(dir, 'boot')
    const start = async (n: MeshNode): Promise<GovernanceService> => { const g = new GovernanceService(n, new GovernanceState(config)); await g.start(); return g }
    let boot = await createMeshNode({ dataDir: bootDir })
    let bootGov = await start(boot)
    const addr = boot.getMultiaddrs()[0].toString()
    const peer = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(peer)
    const peerGov = await start(peer)
    await connectBootstrap(peer, [addr])

    await bootGov.stop()
    await boot.stop()
    await waitFor(() => peer.getConnections(boot.peerId).length === 0, 5_000, 'the peer to see the bootstrap node gone')
    boot = await createMeshNode({ dataDir: bootDir })
    nodes.push(boot)
    bootGov = await start(boot)
    assert.equal(boot.getMultiaddrs()[0].toString(), addr, 'same identity, same port')
    // nobody dials anything: the peer's libp2p redials its keep-alive bootstrap peer
    const t0 = Date.now()
    await waitFor(() => peer.getConnections(boot.peerId).length > 0, 40_000, 'the peer to redial the restarted bootstrap node')
    console.log(`      the peer reconnected ${Date.now() - t0} ms after the bootstrap node came back`)
    await waitFor(() => (boot.services.pubsub as any).getSubscribers(bootGov.topic).length > 0, 20_000, 'the governance topic again')
    const now = Date.now()
    const halt = await createEnvelope({ kind: Kind.HALT, reason: 'after restart', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [keys[0]])
    assert.equal((await bootGov.publish(halt)).accepted, true)
    await waitFor(() => peerGov.haltReason === 'after restart', 10_000, 'the HALT to reach the peer through the restarted node')
    await bootGov.stop()
    await peerGov.stop()
  })
})
