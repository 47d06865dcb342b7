/**
 * The router's own model for the 'local' tail (docs/quality.md §3): a small model this process
 * runs itself, whose full next-token distribution shapes how each expert's unlisted mass is
 * spread (restricted to the ids that expert did not list, capped at its least listed one). It
 * costs no wire bytes; one forward pass per step, run while the experts' frames are on their
 * way. The local model is never one of the ensemble's experts: it only shapes tails.
 *
 * It must share the experts' tokenizer (checked against the router's by vocabulary size and
 * fingerprint at load). With the native frame helper it reads the exact full distribution;
 * without it (MESHLLM_NATIVE=0) only its top-256 and the rest spread evenly.
 */
import { ModelHost, type ModelSession } from '../expert/model-host.js'
import { resolveModel } from '../expert/resolve.js'
import { localTailPrior, type TailPrior } from '../aggregate/prior.js'
import { RouterTokenizer } from './tokenizer.js'

/** the local model's tokenizer is not the router's (different vocabulary or fingerprint) */
export class LocalModelMismatchError extends Error {
  static override name = 'LocalModelMismatchError'
  override name = 'LocalModelMismatchError'
}

export interface LocalModelOptions {
  /** CPU threads for its forward passes (default 1: it runs beside the router's other work) */
  threads?: number
  /** the router's tokenizer: vocabulary size and fingerprint must match (default: not checked) */
  expect?: { vocabSize: number, fingerprint: Uint8Array }
}

export class LocalModel {
  readonly name: string
  readonly vocabSize: number
  /** its tokenizer's fingerprint (src/expert/tokenizer.ts): must be the experts' */
  readonly fingerprint: Uint8Array
  /** tokens in the session's KV cache (the window of the context it was last asked about) */
  private kv: number[] = []
  /** start of that window in the context */
  private windowStart = 0
  private queue: Promise<unknown> = Promise.resolve()
  private readonly scratch: Float64Array
  private closed = false

  private constructor (private readonly host: ModelHost, private readonly session: ModelSession) {
    this.name = host.summary.name
    this.vocabSize = host.summary.vocabSize
    this.fingerprint = host.summary.fingerprint
    this.scratch = new Float64Array(this.vocabSize)
  }

  /** `model`: a bundled name (meshtest-c), a .gguf path or a node-llama-cpp URI */
  static async load (model: string, opts: LocalModelOptions = {}): Promise<LocalModel> {
    // CPU: a small model, and no GPU probe (node-llama-cpp's probe costs ≈ 2 s at every start)
    const host = await ModelHost.load({ modelPath: await resolveModel(model), threads: opts.threads ?? 1, maxSessions: 1, gpu: false })
    const local = new LocalModel(host, host.openSession())
    if (opts.expect != null && !local.matches(opts.expect)) {
      await local.close()
      throw new LocalModelMismatchError(`local model ${model}: its tokenizer (${host.summary.vocabSize} tokens) is not the router's (${opts.expect.vocabSize} tokens)`)
    }
    return local
  }

  /** whether its tokenizer is this one (vocabulary size and fingerprint) */
  matches (t: { vocabSize: number, fingerprint: Uint8Array }): boolean {
    const fp = this.fingerprint
    return this.vocabSize === t.vocabSize && fp.length === t.fingerprint.length && fp.every((b, i) => b === t.fingerprint[i])
  }

  /** a router tokenizer on this model (no second load of the vocabulary); valid until close() */
  tokenizer (): RouterTokenizer {
    return RouterTokenizer.fromModel(this.host.model, this.host.summary)
  }

  /** whether distributions are exact (native helper) or top-256 with an even rest */
  get exact (): boolean {
    return this.session.nativeFrames
  }

  /**
   * Its next-token probabilities after `context` (length V, Σ = 1). Calls are serialised;
   * the KV cache keeps what it can of the previous call's context.
   */
  async distribution (context: ArrayLike<number>): Promise<Float64Array> {
    const run = this.queue.then(async () => await this.compute(Array.from(context)))
    this.queue = run.catch(() => {})
    return await run
  }

  /** the 'local' tail's prior for this step (src/aggregate/prior.ts localTailPrior) */
  async prior (context: ArrayLike<number>): Promise<TailPrior> {
    return localTailPrior(await this.distribution(context), `local:${this.name}`)
  }

  private async compute (context: number[]): Promise<Float64Array> {
    if (this.closed) throw new Error('local model closed')
    if (context.length === 0) throw new RangeError('empty context')
    for (const t of context) if (!(Number.isInteger(t) && t >= 0 && t < this.vocabSize)) throw new RangeError(`token ${t} outside the vocabulary`)
    // a window of at most contextSize − 1 tokens whose start moves in steps of half the
    // context, so a growing context re-evaluates half a window once per half window
    const max = this.host.contextSize - 1
    const half = Math.max(1, Math.floor(max / 2))
    const start = context.length <= max ? 0 : Math.ceil((context.length - max) / half) * half
    const win = context.slice(start)
    let common = 0
    if (start === this.windowStart) {
      const n = Math.min(this.kv.length, win.length)
      while (common < n && this.kv[common] === win[common]) common++
    }
    if (common === win.length) common-- // re-evaluate the last token to get its logits
    if (this.kv.length > common) await this.session.rollback(this.kv.length - common)
    this.kv.length = common
    this.windowStart = start
    const acc = this.scratch
    acc.fill(0)
    let frame
    try {
      ;[frame] = await this.session.evaluate(win.slice(common), [], 256, { unlistedInto: acc })
    } catch (err) {
      // the cache's state is unknown: start over next time
      await this.session.rollback(this.session.position).catch(() => {})
      this.kv = []
      throw err
    }
    this.kv = win
    const out = new Float64Array(this.vocabSize)
    let listed = 0
    for (let i = 0; i < frame.ids.length; i++) listed += (out[frame.ids[i]] = Math.exp(frame.logprobs[i]))
    if (this.session.nativeFrames) {
      for (let t = 0; t < out.length; t++) out[t] += acc[t]
    } else {
      // top-256 only: the rest evenly over the unlisted ids
      const each = Math.max(0, 1 - listed) / Math.max(1, this.vocabSize - frame.ids.length)
      for (let t = 0; t < out.length; t++) if (out[t] === 0) out[t] = each
    }
    return out
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.queue
    await this.session.close()
    await this.host.close()
  }
}
