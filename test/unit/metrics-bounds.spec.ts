/* Prometheus label cardinality is bounded against what peers and callers pick: per-expert
 * series (peer ids are free: a Sybil swarm) and HTTP method names. */
import assert from 'node:assert/strict'
import { ApiMetrics, MAX_EXPERT_SERIES } from '../../src/api/metrics.js'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'

describe('metrics: bounded label cardinality', function () {
  this.timeout(60_000)
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let metrics: ApiMetrics

  before(async () => {
    node = await createMeshNode()
    await node.start()
    tokenizer = await RouterTokenizer.load('meshtest-c')
    const router = new Router(node, tokenizer)
    metrics = new ApiMetrics({ router, localHost: () => undefined, expertsOnline: () => ({ compatible: 0, incompatible: 0 }), modelOf: () => 'm' }, { defaultMetrics: false })
  })
  after(async () => { await tokenizer?.close(); await node?.stop() })

  const experts = (text: string, metric: string): Set<string> =>
    new Set([...text.matchAll(new RegExp(`^${metric}\\{[^}]*expert="([^"]+)"`, 'gm'))].map(m => m[1]))

  it(`keeps at most ${MAX_EXPERT_SERIES} experts' series, the most recently seen`, async () => {
    for (let i = 0; i < MAX_EXPERT_SERIES + 44; i++) {
      metrics.observer.onExpertRequest?.({ expert: `peer-${i}`, ok: i % 2 === 0, ms: 5 } as any)
      metrics.observer.onGeneration?.({ perExpert: [{ expert: `peer-${i}`, bytes: 100, frames: 2 }] } as any)
    }
    const text = await metrics.text()
    for (const m of ['meshllm_expert_bytes_total', 'meshllm_expert_frames_total', 'meshllm_expert_bytes_per_token']) {
      const e = experts(text, m)
      assert.equal(e.size, MAX_EXPERT_SERIES, m)
      assert.ok(e.has(`peer-${MAX_EXPERT_SERIES + 43}`) && !e.has('peer-0'), m)
    }
    assert.ok(experts(text, 'meshllm_expert_step_latency_seconds_count').size <= MAX_EXPERT_SERIES)
  })

  it('folds unusual HTTP methods into one series', async () => {
    for (let i = 0; i < 100; i++) metrics.request('http', `X${i} /v1/completions`)
    metrics.request('http', 'GET /healthz')
    const text = await metrics.text()
    const lines = text.split('\n').filter(l => l.startsWith('meshllm_api_requests_total{'))
    assert.deepEqual(lines.map(l => /method="([^"]+)"/.exec(l)![1]).sort(), ['GET /healthz', 'OTHER /v1/completions'])
  })
})
