/**
 * The router's parts outside a live mesh: its component logger comes from RouterOptions.logger
 * (else the node's), every expert frame passes one check (the position asked for, a valid
 * distribution: else that expert's failure, InvalidFrameError for a bad distribution), and the
 * per-step deadline is the larger of its floor and 4 × the chosen experts' lower-median latency.
 */
import assert from 'node:assert/strict'
import type { ComponentLogger } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { checkFrame, stepDeadline, type Candidate, type Selection } from '../../src/router/candidates.js'
import type { ExpertHealth } from '../../src/router/health.js'
import type { Frame } from '../../src/wire/types.js'
import type { ExpertRecord } from '../../src/wire/record.js'

const V = 1000

function frame (position: number, probs: Record<number, number>, tailMass = 0): Frame {
  const ids = Object.keys(probs).map(Number).sort((x, y) => x - y)
  return { position, ids: Uint32Array.from(ids), logprobs: Float32Array.from(ids.map(id => Math.log(probs[id]))), tailMass }
}

/** a ComponentLogger that records the components asked for */
function recordingLogger (): { logger: ComponentLogger, components: string[] } {
  const components: string[] = []
  const base = defaultLogger()
  return { components, logger: { forComponent: (name: string) => { components.push(name); return base.forComponent(name) } } }
}

describe('router structure', function () {
  this.timeout(60_000)
  let node: MeshNode
  let tokenizer: RouterTokenizer

  before(async () => {
    node = await createMeshNode()
    tokenizer = await RouterTokenizer.load('meshtest-c')
  })
  after(async () => { await tokenizer?.close(); await node?.stop() })

  it('takes its component logger (meshllm:router) from RouterOptions.logger', () => {
    const { logger, components } = recordingLogger()
    const router = new Router(node, tokenizer, { logger })
    assert.ok(router.reputation != null)
    assert.deepEqual(components, ['meshllm:router'])
  })

  it("defaults to the node's component logger", async () => {
    const { logger, components } = recordingLogger()
    const own = await createMeshNode()
    try {
      // the node's ComponentLogger (libp2p's `logger`), recording here
      Object.defineProperty(own, 'logger', { value: logger })
      const router = new Router(own, tokenizer)
      assert.ok(router.node === own)
      assert.deepEqual(components, ['meshllm:router'])
    } finally {
      await own.stop()
    }
  })

  it('checkFrame: the position asked for and a valid distribution, else the expert failed', () => {
    assert.doesNotThrow(() => { checkFrame(frame(7, { 1: 0.5, 2: 0.3 }, 0.2), 7, V) })
    assert.throws(() => { checkFrame(frame(6, { 1: 0.5, 2: 0.3 }, 0.2), 7, V) }, (e: Error) => e.name === 'Error')
    // mass far from 1, an id outside the vocabulary: InvalidFrameError (costs reputation)
    assert.throws(() => { checkFrame(frame(7, { 1: 0.1 }, 0), 7, V) }, { name: 'InvalidFrameError' })
    assert.throws(() => { checkFrame(frame(7, { [V]: 0.9 }, 0.1), 7, V) }, { name: 'InvalidFrameError' })
    // at the vocabulary's bound: the last id is valid
    assert.doesNotThrow(() => { checkFrame(frame(7, { [V - 1]: 0.9 }, 0.1), 7, V) })
  })

  it('stepDeadline: max(floor, 4 × lower-median latency + 100)', () => {
    const pid = peerIdFromString('12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA')
    const cand = (id: string): Candidate => ({ id, record: { peerId: pid } as unknown as ExpertRecord })
    const lat: Record<string, number> = { a: 10, b: 300, c: 5000 }
    const sel: Selection = {
      select: (pool) => pool,
      colocation: new Map(),
      health: () => (c) => ({ latencyMs: lat[c.id] } as unknown as ExpertHealth)
    }
    // the slow expert cannot hold the step: the lower median of 10, 300, 5000 is 300
    assert.equal(stepDeadline([cand('a'), cand('b'), cand('c')], sel, 100), 4 * 300 + 100)
    // two: the lower of the two
    assert.equal(stepDeadline([cand('c'), cand('a')], sel, 100), 4 * 10 + 100)
    // the floor (default 1 500 ms) when the experts are fast
    assert.equal(stepDeadline([cand('a')], sel), 1_500)
  })
})
