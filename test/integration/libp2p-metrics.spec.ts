/**
 * libp2p's own metrics next to ours: a node created with `metrics: registry` and ApiMetrics
 * on the same registry; what /metrics serves (ApiMetrics.text(), content type included)
 * holds libp2p_* series of the node's real connections alongside the meshllm_* ones.
 */
import assert from 'node:assert/strict'
import { Registry, register } from 'prom-client'
import { ApiMetrics } from '../../src/api/metrics.js'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'

describe('metrics: libp2p_* series on our registry', function () {
  this.timeout(60_000)
  let node: MeshNode
  let peer: MeshNode
  let tokenizer: RouterTokenizer

  after(async () => {
    await tokenizer?.close()
    await node?.stop()
    await peer?.stop()
  })

  it('a scrape shows libp2p\'s connection series (with the live connection) and ours', async () => {
    const registry = new Registry()
    node = await createMeshNode({ metrics: registry })
    peer = await createMeshNode()
    tokenizer = await RouterTokenizer.load('meshtest-c')
    const metrics = new ApiMetrics({ router: new Router(node, tokenizer), localHost: () => undefined, expertsOnline: () => ({ compatible: 0, incompatible: 0 }), modelOf: () => 'm' }, { defaultMetrics: false, registry })
    assert.equal(metrics.registry, registry)
    await node.dial(peer.getMultiaddrs()[0])
    const text = await metrics.text()
    assert.match(text, /^meshllm_tokens_generated_total /m)
    const outbound = text.match(/^libp2p_connection_manager_connections\{libp2p_connection_manager_connections="outbound"\} (\d+)$/m)
    assert.ok(outbound != null, `no libp2p_connection_manager_connections series in:\n${text.split('\n').filter(l => l.startsWith('libp2p_')).slice(0, 20).join('\n')}`)
    assert.equal(Number(outbound[1]), 1)
    assert.equal(metrics.contentType, registry.contentType)
  })

  it('a node without `metrics` collects none (nothing on prom-client\'s global registry either)', async () => {
    const other = await createMeshNode()
    try {
      await other.dial(peer.getMultiaddrs()[0])
      assert.equal(other.metrics, undefined)
      assert.deepEqual(register.getMetricsAsArray().map(m => m.name).filter(n => n.startsWith('libp2p_')), [])
    } finally {
      await other.stop()
    }
  })
})
