/**
 * src/node/dht-internals.ts against a real @libp2p/kad-dht: the internals it reads are
 * there (a dependency upgrade that moves them fails here with DhtInternalsChangedError), and
 * the typed API sees, lists and removes routing-table peers.
 */
import assert from 'node:assert/strict'
import type { KadDHT } from '@libp2p/kad-dht'
import { createMeshNode, waitForDhtPeers, type MeshNode } from '../../src/node/node.js'
import { assertDhtInternals, onRoutingTableAdd, removeFromRoutingTable, routingTablePeers, routingTableSize, DhtInternalsChangedError } from '../../src/node/dht-internals.js'

describe('kad-dht internals (one module, checked on a real node)', function () {
  this.timeout(60_000)
  const nodes: MeshNode[] = []

  after(async () => {
    for (const n of nodes) await n.stop()
  })

  it('a real kad-dht node has every internal the module reads', async () => {
    const node = await createMeshNode()
    nodes.push(node)
    assert.doesNotThrow(() => { assertDhtInternals(node.services.dht) })
  })

  it('size, peers, add events and removal of routing-table peers', async () => {
    const a = await createMeshNode()
    const b = await createMeshNode()
    nodes.push(a, b)
    const added: string[] = []
    const off = onRoutingTableAdd(a.services.dht, (p) => { added.push(p.toString()) })
    assert.equal(routingTableSize(a.services.dht), 0)
    await a.dial(b.getMultiaddrs()[0])
    assert.equal(await waitForDhtPeers(a, 20_000), true)
    assert.equal(routingTableSize(a.services.dht), 1)
    assert.deepEqual(routingTablePeers(a.services.dht).map(String), [b.peerId.toString()])
    assert.deepEqual(added, [b.peerId.toString()])
    off()
    await removeFromRoutingTable(a.services.dht, b.peerId)
    assert.equal(routingTableSize(a.services.dht), 0)
    assert.deepEqual(routingTablePeers(a.services.dht), [])
  })

  it('no DHT (a minimal node): empty, nothing to remove', async () => {
    const node = await createMeshNode({ minimal: true })
    nodes.push(node)
    const dht = node.services.dht as KadDHT | undefined
    assert.equal(routingTableSize(dht), 0)
    assert.deepEqual(routingTablePeers(dht), [])
    await removeFromRoutingTable(dht, node.peerId)
    onRoutingTableAdd(dht, () => {})()
  })

  it('a kad-dht without those internals is refused by name, naming what is missing', async () => {
    const node = await createMeshNode()
    nodes.push(node)
    const real = node.services.dht as unknown as { routingTable: object }
    // the same kad-dht object seen through a prototype whose routing table lost a member
    const moved = (member: string): KadDHT => Object.create(node.services.dht, { routingTable: { value: Object.create(real.routingTable, { [member]: { value: undefined } }) } })
    assert.throws(() => { assertDhtInternals(moved('kb')) }, (err: Error) => err instanceof DhtInternalsChangedError && err.name === 'DhtInternalsChangedError' && err.message.includes('kb.toIterable()'))
    assert.throws(() => { routingTableSize(moved('size')) }, { name: 'DhtInternalsChangedError' })
    assert.throws(() => { assertDhtInternals(Object.create(node.services.dht, { routingTable: { value: undefined } })) }, { name: 'DhtInternalsChangedError' })
  })
})
