/**
 * Drafters for speculative mesh decoding: they propose the next few tokens cheaply; the
 * experts then score all proposed positions in one batched evaluation and the router keeps
 * the longest prefix the ensemble accepts (src/router/speculative.ts, docs/speculative.md).
 * A drafter only changes speed, never the output distribution.
 */
import { ModelHost, type ModelSession } from '../expert/model-host.js'
import { resolveModel } from '../expert/resolve.js'
import { proposalDistribution, sampleProposal, type Proposal } from '../aggregate/sampling.js'
import type { Rng, SamplingOptions } from '../aggregate/types.js'

export interface Drafter {
  readonly name: string
  /** up to `n` proposed tokens following `context` (deterministic: greedy or looked up) */
  propose: (context: number[], n: number) => Promise<number[]>
  /**
   * Optional, for temperature > 0: up to `n` tokens *sampled* from the drafter's own
   * distribution after `opts`, with the proposal distribution of each (the router then
   * accepts with min(1, p/q): speculativeStepSampled). Far higher acceptance than a greedy
   * draft when the target is flat.
   */
  proposeSampled?: (context: number[], n: number, opts: SamplingOptions, rng: Rng) => Promise<{ tokens: number[], proposals: Proposal[] }>
  close: () => Promise<void>
}

/**
 * Prompt lookup: the continuation that followed the most recent earlier occurrence of the
 * context's last 3, 2 or 1 tokens. Free, and good on repetitive text.
 */
export class NgramDrafter implements Drafter {
  readonly name = 'ngram'
  async propose (context: number[], n: number): Promise<number[]> {
    for (let size = Math.min(3, context.length - 1); size >= 1; size--) {
      const tail = context.slice(context.length - size)
      for (let start = context.length - size - 1; start >= 0; start--) {
        let match = true
        for (let j = 0; j < size; j++) if (context[start + j] !== tail[j]) { match = false; break }
        if (match) {
          const out = context.slice(start + size, start + size + n)
          if (out.length > 0) return out
        }
      }
    }
    return []
  }

  async close (): Promise<void> {}
}

/**
 * A small local model's greedy continuation (default: the bundled meshtest-c, ~2.5 ms per
 * token on one CPU thread). Keeps one KV sequence and rolls back what diverged from the
 * context since the last call.
 */
export class ModelDrafter implements Drafter {
  readonly name: string
  private kv: number[] = []
  private constructor (private readonly host: ModelHost, private readonly session: ModelSession) {
    this.name = `model:${host.summary.name}`
  }

  static async load (model = 'meshtest-c', threads = 1): Promise<ModelDrafter> {
    const host = await ModelHost.load({ modelPath: await resolveModel(model), threads, maxSessions: 1, gpu: 'auto' })
    return new ModelDrafter(host, host.openSession())
  }

  async propose (context: number[], n: number): Promise<number[]> {
    return (await this.draft(context, n)).tokens
  }

  async proposeSampled (context: number[], n: number, opts: SamplingOptions, rng: Rng): Promise<{ tokens: number[], proposals: Proposal[] }> {
    const V = this.host.summary.vocabSize
    return await this.draft(context, n, (ids, logprobs) => {
      const q = proposalDistribution(ids, logprobs, opts, V)
      return { token: sampleProposal(q, rng), q }
    })
  }

  /** the continuation, one token at a time from the drafter's frames: greedy, or `pick` */
  private async draft (context: number[], n: number, pick?: (ids: Uint32Array, logprobs: Float32Array) => { token: number, q: Proposal }): Promise<{ tokens: number[], proposals: Proposal[] }> {
    const tokens: number[] = []
    const proposals: Proposal[] = []
    if (n <= 0) return { tokens, proposals }
    if (context.length + n >= this.host.contextSize - 1) n = this.host.contextSize - 2 - context.length
    if (n <= 0) return { tokens, proposals }
    let common = 0
    const max = Math.min(this.kv.length, context.length)
    while (common < max && this.kv[common] === context[common]) common++
    if (common === context.length) common-- // re-evaluate the last token to get its frame
    if (this.kv.length > common) await this.session.rollback(this.kv.length - common)
    this.kv.length = common
    let frame = await this.session.append(context.slice(common))
    this.kv = [...context]
    while (tokens.length < n) {
      let t: number
      if (pick != null) {
        const r = pick(frame.ids, frame.logprobs)
        t = r.token
        proposals.push(r.q)
      } else {
        let best = 0
        for (let i = 1; i < frame.logprobs.length; i++) if (frame.logprobs[i] > frame.logprobs[best]) best = i
        t = frame.ids[best]
      }
      tokens.push(t)
      if (tokens.length === n) break
      frame = await this.session.append([t])
      this.kv.push(t)
    }
    return { tokens, proposals }
  }

  async close (): Promise<void> {
    await this.session.close()
    await this.host.close()
  }
}
