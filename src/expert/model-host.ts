/**
 * The model host: one GGUF model loaded with node-llama-cpp, one context with a KV sequence
 * per session, and the fast top-256 frame builder.
 *
 * Frame building (see docs/frames.md):
 *  - fast path: the native helper (src/expert/native.ts, native/) reads the position's logits
 *    row from llama.cpp and returns the exact top-k ids, logprob = logit − logsumexp, and the
 *    tail mass in one synchronous call (≈ 0.3 ms);
 *  - fallback (helper not built, layout check failed, MESHLLM_NATIVE=0, or non-finite logits):
 *    node-llama-cpp 3.21 exposes next-token distributions only through its samplers,
 *    renormalised over the sampler's candidate set, so two native samplers run on the same
 *    logits (no JS Map, no full-vocabulary copy to JS):
 *      1. top-k (k=256, temperature 1): the 256 most probable ids with probabilities
 *         renormalised over those 256 (q_i = p_i / S, S = mass of the top 256);
 *      2. greedy with `confidence`: the full-vocabulary probability p_g of the argmax token.
 *    Since the argmax token is in both, S = p_g / q_g, so logprob_i = log q_i + log S and the
 *    tail mass is exactly 1 − S.
 */
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type LlamaContext, type LlamaContextSequence } from 'node-llama-cpp'
import os from 'node:os'
import type { Frame } from '../wire/types.js'
import { summarizeGguf, type GgufSummary } from './tokenizer.js'
import { BusyError, ContextOverflowError } from '../util/errors.js'
import { nativeFramesFor, type NativeFrames } from './native.js'
import { AUTO_MAX_SESSIONS, AUTO_MIN_SESSIONS, MAX_SESSIONS, autoSessions } from './sessions.js'

// The node-llama-cpp internals this file uses, declared as far as it uses them: they are not in
// its public types (nor is its AddonTypes.d.ts exported), and they are stable internals of the
// pinned version (package.json pins node-llama-cpp 3.21.1).

/** a sampler's configuration as a sequence resolves it (opaque here) */
type SamplerConfig = unknown

/** LlamaSampler: not exported by node-llama-cpp's entry point */
interface Sampler {
  /** the native AddonSampler */
  _sampler: unknown
  applyConfig: (config: SamplerConfig) => unknown
  asyncDispose: () => Promise<void>
}

/** a context's native AddonContext (LlamaContext._ctx) */
interface AddonContext {
  /**
   * [token, probabilities, confidence]: the probabilities ([id, q, id, q, …]) when asked for,
   * the confidence (full-vocabulary probability of the token) when asked for
   */
  sampleToken: (batchLogitIndex: number, sampler: unknown, probabilities: boolean, confidence: boolean) => Promise<[number, number[], number]>
}

/** LlamaContextSequence's batch decoder */
interface SequenceInternals {
  _resolveSamplerConfig: (options: { temperature: number, topK?: number, topP?: number, minP?: number, seed?: number }) => SamplerConfig
  _tokenMeter: unknown
  /** evaluates `tokens`; `onLogits` runs for each position whose `logits` entry is true */
  _decodeTokens: (
    tokens: number[],
    logits: boolean[],
    evaluationPriority: number,
    tokenMeter: unknown,
    contextShift: { size: number, strategy: 'eraseBeginning' },
    onLogits: (batchLogitIndex: number, tokenIndex: number) => undefined | Promise<undefined>
  ) => Promise<unknown>
}

const { LlamaSampler } = await import(new URL('./evaluator/LlamaContext/LlamaSampler.js', import.meta.resolve('node-llama-cpp')).href) as {
  LlamaSampler: new (model: LlamaModel) => Sampler
}

export interface ModelHostOptions {
  modelPath: string
  /** CPU threads for evaluation; default: max(1, cores - 1) capped at 4 */
  threads?: number
  /**
   * concurrent sessions (KV sequences), ≤ MAX_SESSIONS (1024); default 'auto': as many as
   * autoSessions() allows (src/expert/sessions.ts: at least 4, at most 16, their KV cache
   * within ¼ of the memory free once the model is loaded: RAM, or VRAM when the model is on a
   * GPU; the estimate is node-llama-cpp's)
   */
  maxSessions?: number | 'auto'
  /** per-session context; default and maximum: the model's training context */
  contextSize?: number
  /** 'auto' uses a GPU when node-llama-cpp finds one */
  gpu?: 'auto' | false
  onLoadProgress?: (fraction: number) => void
}

export interface FrameTiming {
  /** forward pass (decode) ms */
  forwardMs: number
  /** frame building ms (native helper, or both samplers on the fallback path) */
  frameMs: number
}

/** options of ModelSession.evaluate beyond tokens, draft and top-k */
export interface EvaluateOptions {
  /**
   * teacher forcing: the known token after the last evaluated position; the last frame gets
   * its exact full-vocabulary logprob (Frame.targetLogprob), or none when it cannot be computed
   * exactly (fallback path and the target not among the listed ids)
   */
  target?: number
  /**
   * also score `tokens`: the exact logprob of tokens[i] after tokens[0..i), i = 1..n−1, summed
   * (logits for every position of the batch; native helper only: absent on the fallback path)
   */
  scorePrompt?: boolean
  /**
   * offline tail-prior estimation (scripts/make-tail-prior.mjs): for the LAST frame, adds the
   * full-distribution probability of every token the frame does not list into this array
   * (length ≥ vocabulary size). Native helper only; ignored on the fallback path.
   */
  unlistedInto?: Float64Array
}

export interface EvaluateResult {
  frames: Frame[]
  /** with scorePrompt, when every position could be scored: Σ_{i=1}^{n−1} log p(tokens[i] | …) */
  promptLogprob?: number
  /** the number of tokens in promptLogprob (tokens.length − 1) */
  promptScored?: number
}

/** target logprobs below this (a −∞ logit) are reported as this floor, so the wire value stays finite */
export const MIN_TARGET_LOGPROB = -10_000

function clampTarget (lp: number): number {
  return lp < MIN_TARGET_LOGPROB ? MIN_TARGET_LOGPROB : lp > 0 ? 0 : lp
}

export function defaultThreads (): number {
  return Math.max(1, Math.min(4, os.availableParallelism() - 1))
}

let llamaPromise: Promise<Llama> | undefined
function sharedLlama (gpu: 'auto' | false): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu, logLevel: LlamaLogLevel.error, build: 'never' })
  return llamaPromise
}

export class ModelHost {
  readonly summary: GgufSummary
  readonly model: LlamaModel
  readonly context: LlamaContext
  readonly maxSessions: number
  readonly contextSize: number
  readonly threads: number
  readonly parameterCount: number
  readonly gpu: string | false
  readonly modelPath: string
  private readonly sessions = new Set<ModelSession>()
  /** cumulative frame timings, for status and benchmarks */
  readonly stats = { positions: 0, forwardMs: 0, frameMs: 0 }

  private constructor (
    modelPath: string,
    summary: GgufSummary,
    model: LlamaModel,
    context: LlamaContext,
    maxSessions: number,
    threads: number,
    gpu: string | false
  ) {
    this.modelPath = modelPath
    this.summary = summary
    this.model = model
    this.context = context
    this.maxSessions = maxSessions
    this.contextSize = context.contextSize
    this.threads = threads
    this.gpu = gpu
    this.parameterCount = estimateParams(model)
  }

  static async load (opts: ModelHostOptions): Promise<ModelHost> {
    const summary = await summarizeGguf(opts.modelPath)
    const llama = await sharedLlama(opts.gpu ?? 'auto')
    const model = await llama.loadModel({
      modelPath: opts.modelPath,
      onLoadProgress: opts.onLoadProgress
    })
    const trainCtx = model.trainContextSize
    const contextSize = Math.min(opts.contextSize ?? trainCtx, trainCtx)
    const threads = opts.threads ?? defaultThreads()
    const batchSize = Math.min(512, contextSize)
    const maxSessions = opts.maxSessions === undefined || opts.maxSessions === 'auto'
      ? await ModelHost.autoSessions(llama, model, contextSize, batchSize)
      : Math.max(1, Math.min(MAX_SESSIONS, opts.maxSessions))
    const context = await model.createContext({
      contextSize,
      sequences: maxSessions,
      threads,
      batchSize
    })
    return new ModelHost(opts.modelPath, summary, model, context, maxSessions, threads, llama.gpu)
  }

  /** 'auto': node-llama-cpp's estimate of one more sequence's memory, against what is free now */
  private static async autoSessions (llama: Llama, model: LlamaModel, contextSize: number, batchSize: number): Promise<number> {
    try {
      const est = async (sequences: number): Promise<{ cpuRam: number, gpuVram: number }> =>
        await model.fileInsights.estimateContextResourceRequirementsV2({ contextSize, modelGpuLayers: model.gpuLayers, sequences, batchSize })
      const [one, all] = await Promise.all([est(1), est(AUTO_MAX_SESSIONS)])
      const onGpu = model.gpuLayers > 0 && llama.gpu !== false
      const per = ((onGpu ? all.gpuVram - one.gpuVram : all.cpuRam - one.cpuRam)) / (AUTO_MAX_SESSIONS - 1)
      const free = onGpu ? (await llama.getVramState()).free : (await llama.getRamState()).free
      return autoSessions(per, free)
    } catch {
      return AUTO_MIN_SESSIONS // no estimate for this model: the old fixed default
    }
  }

  get freeSlots (): number {
    return this.maxSessions - this.sessions.size
  }

  get openSessions (): number {
    return this.sessions.size
  }

  /** Claims a KV sequence; throws BusyError when every slot is in use. */
  openSession (): ModelSession {
    if (this.sessions.size >= this.maxSessions || this.context.sequencesLeft === 0) {
      throw new BusyError(`all ${this.maxSessions} session slots are in use`)
    }
    const s = new ModelSession(this, this.context.getSequence())
    this.sessions.add(s)
    return s
  }

  /** @internal */
  released (s: ModelSession): void {
    this.sessions.delete(s)
  }

  /** Measures decode speed (tokens/s, frame building included) on a scratch sequence. */
  async measureSpeed (tokens = 24): Promise<number> {
    const s = this.openSession()
    try {
      const bos = this.summary.bosTokenId ?? 0
      let frame = await s.append([bos])
      const start = performance.now()
      for (let i = 0; i < tokens; i++) {
        frame = await s.append([frame.ids[argmaxIndex(frame)]])
      }
      return tokens / ((performance.now() - start) / 1000)
    } finally {
      await s.close()
    }
  }

  async close (): Promise<void> {
    for (const s of [...this.sessions]) await s.close()
    await this.context.dispose()
    await this.model.dispose()
  }
}

function argmaxIndex (f: Frame): number {
  let best = 0
  for (let i = 1; i < f.logprobs.length; i++) if (f.logprobs[i] > f.logprobs[best]) best = i
  return best
}

/** parameter count from GGUF tensor shapes is not read (readTensorInfo: false); estimate from file size and quantisation */
function estimateParams (model: LlamaModel): number {
  const bytes = model.size
  const q = model.fileInfo.metadata.general.file_type as number | undefined
  const bitsPerParam = q === 7 ? 8.5 : q === 1 || q === 32 ? 16 : q === 0 ? 32 : q === 2 ? 4.5 : q === 15 ? 4.85 : 8
  return Math.round(bytes * 8 / bitsPerParam)
}

/** One router session: its own KV sequence, appended to and read as frames. */
export class ModelSession {
  private readonly host: ModelHost
  private readonly seq: LlamaContextSequence
  /** the native frame helper (exact top-k straight from the logits), when available */
  private readonly native: NativeFrames | undefined
  /** fallback samplers, created on first use */
  private topK: Sampler | undefined
  private greedy: Sampler | undefined
  private closed = false
  private busy = false
  lastUsed = Date.now()
  readonly timing: FrameTiming = { forwardMs: 0, frameMs: 0 }

  constructor (host: ModelHost, seq: LlamaContextSequence) {
    this.host = host
    this.seq = seq
    this.native = nativeFramesFor(host.context, host.model, host.summary.vocabSize)
  }

  /** whether this session's frames come from the native helper (else node-llama-cpp's samplers) */
  get nativeFrames (): boolean {
    return this.native != null
  }

  /** number of tokens in this session's context */
  get position (): number {
    return this.seq.nextTokenIndex
  }

  private samplers (): { topK: Sampler, greedy: Sampler } {
    if (this.topK == null) {
      const seq = this.seq as unknown as SequenceInternals
      this.topK = new LlamaSampler(this.host.model)
      this.topK.applyConfig(seq._resolveSamplerConfig({ temperature: 1, topK: 256, topP: 1, minP: 0, seed: 1 }))
      this.greedy = new LlamaSampler(this.host.model)
      this.greedy.applyConfig(seq._resolveSamplerConfig({ temperature: 0 }))
    }
    // both were created together
    return { topK: this.topK, greedy: this.greedy as Sampler }
  }

  /**
   * Evaluates `tokens` after the current context in one batch and returns the frame of the
   * next position. Throws ContextOverflowError when they do not fit.
   */
  async append (tokens: ArrayLike<number>, topK = 256): Promise<Frame> {
    return (await this.evaluate(tokens, [], topK))[0]
  }

  /**
   * Evaluates `tokens` then `draft` after the current context in ONE batch and returns
   * draft.length + 1 frames: after the last of `tokens`, then after each draft token
   * (speculative decoding: the router scores a whole draft per round trip).
   */
  async evaluate (tokens: ArrayLike<number>, draft: ArrayLike<number> = [], topK = 256, opts: EvaluateOptions = {}): Promise<Frame[]> {
    return (await this.evaluateScored(tokens, draft, topK, opts)).frames
  }

  /**
   * evaluate() with the prompt score: with opts.scorePrompt the batch computes logits for
   * every position and the result carries the exact log-likelihood of `tokens` after their
   * first token (promptLogprob, promptScored), when the native helper could compute every
   * position (else both are absent). opts.target: see EvaluateOptions.
   */
  async evaluateScored (tokens: ArrayLike<number>, draft: ArrayLike<number> = [], topK = 256, opts: EvaluateOptions = {}): Promise<EvaluateResult> {
    if (this.closed) throw new Error('session closed')
    if (this.busy) throw new Error('session busy: one request at a time')
    if (tokens.length === 0) throw new Error('no tokens to evaluate')
    const total = tokens.length + draft.length
    if (this.position + total > this.host.contextSize - 1) {
      throw new ContextOverflowError(`context full: ${this.position} + ${total} tokens exceed the context of ${this.host.contextSize}`)
    }
    this.busy = true
    this.lastUsed = Date.now()
    try {
      const toks = [...Array.from(tokens), ...Array.from(draft)]
      const firstOut = tokens.length - 1
      const lastOut = toks.length - 1
      const score = opts.scorePrompt === true && tokens.length > 1
      const target = opts.target
      if (target !== undefined && (!Number.isInteger(target) || target < 0 || target >= this.host.summary.vocabSize)) {
        throw new Error(`target ${target} outside the vocabulary`)
      }
      const logits = toks.map((_, i) => i >= firstOut || score)
      let promptLogprob = 0
      let promptOk = score && this.native != null
      const scratch = new Float64Array(1)
      const ctx = (this.host.context as unknown as { _ctx: AddonContext })._ctx
      const seqInternals = this.seq as unknown as SequenceInternals
      const position = this.position
      const k = Math.max(1, Math.min(256, topK, this.host.summary.vocabSize))
      const frames: Array<Frame | undefined> = new Array(draft.length + 1)
      const pending: Array<Promise<void>> = []
      const t0 = performance.now()
      let t1 = -1
      let frameMs = 0
      // the logits of this batch are valid inside the callback (node-llama-cpp decodes the
      // next batch only after every callback of this one has settled)
      const shift = { size: 1, strategy: 'eraseBeginning' } as const
      await seqInternals._decodeTokens(toks, logits, 5, seqInternals._tokenMeter, shift, (batchLogitIndex: number, tokenIndex: number) => {
        const f0 = performance.now()
        if (t1 < 0) t1 = f0
        if (score && tokenIndex < tokens.length - 1) {
          // prompt scoring: the exact logprob of the next prompt token at this position
          if (promptOk && this.native != null && this.native.logprob(batchLogitIndex, toks[tokenIndex + 1], scratch) === 0 && !Number.isNaN(scratch[0])) {
            promptLogprob += clampTarget(scratch[0])
          } else {
            promptOk = false
          }
          if (tokenIndex < firstOut) { frameMs += performance.now() - f0; return undefined }
        }
        const slot = tokenIndex - firstOut
        const pos = position + tokenIndex + 1
        const wantTarget = target !== undefined && tokenIndex === lastOut
        if (this.native != null) {
          const ids = new Uint32Array(k)
          const logprobs = new Float32Array(k)
          const tail = wantTarget
            ? this.native.topkWithTarget(batchLogitIndex, ids, logprobs, target, scratch)
            : this.native.topk(batchLogitIndex, ids, logprobs)
          if (tail >= 0) {
            const frame: Frame = { position: pos, ids, logprobs, tailMass: tail }
            if (wantTarget) {
              if (!Number.isNaN(scratch[0])) frame.targetLogprob = clampTarget(scratch[0])
              else attachListedTarget(frame, target) // a helper built before teacher forcing
            }
            if (opts.unlistedInto != null && tokenIndex === lastOut) this.native.accumulate(batchLogitIndex, ids, 1, opts.unlistedInto)
            frames[slot] = frame
            frameMs += performance.now() - f0
            return undefined
          }
          // non-finite logits or a disposed context: the samplers decide for this position
        }
        const { topK: topKSampler, greedy } = this.samplers()
        const p = (async () => {
          const [, probs] = await ctx.sampleToken(batchLogitIndex, topKSampler._sampler, true, false)
          const [g, , conf] = await ctx.sampleToken(batchLogitIndex, greedy._sampler, false, true)
          const frame = buildFrame(probs, g, conf, pos, topK)
          if (wantTarget) attachListedTarget(frame, target)
          frames[slot] = frame
          frameMs += performance.now() - f0
        })()
        pending.push(p)
        return p.then(() => undefined)
      })
      await Promise.all(pending)
      const forwardMs = (t1 < 0 ? performance.now() : t1) - t0
      this.timing.forwardMs += forwardMs
      this.timing.frameMs += frameMs
      this.host.stats.positions += frames.length
      this.host.stats.forwardMs += forwardMs
      this.host.stats.frameMs += frameMs
      for (const f of frames) if (f == null) throw new Error('model produced no logits')
      const result: EvaluateResult = { frames: frames as Frame[] }
      if (promptOk) {
        result.promptLogprob = promptLogprob
        result.promptScored = tokens.length - 1
      }
      return result
    } finally {
      this.busy = false
      this.lastUsed = Date.now()
    }
  }

  /** Erases the last `n` tokens of this session's context from its KV cache (rejected drafts). */
  async rollback (n: number): Promise<void> {
    if (n <= 0) return
    if (n > this.position) throw new ContextOverflowError(`cannot roll back ${n} tokens of a ${this.position}-token context`)
    await this.seq.eraseContextTokenRanges([{ start: this.position - n, end: this.position }])
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.host.released(this)
    try {
      this.seq.dispose()
    } catch {}
    await Promise.allSettled([this.topK?.asyncDispose?.(), this.greedy?.asyncDispose?.()])
  }
}

/**
 * Fallback for Frame.targetLogprob: the target's listed logprob when the frame lists it (the
 * sampler path's logprobs, exact up to its constant shift, see docs/frames.md); otherwise the
 * field stays absent (the exact value is unknown).
 */
function attachListedTarget (frame: Frame, target: number): void {
  for (let i = 0; i < frame.ids.length; i++) {
    if (frame.ids[i] === target) {
      // a logprob clamped at −64 is not exact
      if (frame.logprobs[i] > -64) frame.targetLogprob = Math.min(0, frame.logprobs[i])
      return
    }
  }
}

/**
 * raw: [id, q, id, q, …] sorted by q descending, q renormalised over the listed ids.
 * pGreedy: full-vocabulary probability of the argmax token.
 */
export function buildFrame (raw: number[], greedyToken: number, pGreedy: number, position: number, topK = 256): Frame {
  const n = Math.min(topK, raw.length >> 1)
  let qGreedy = 0
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i] === greedyToken) { qGreedy = raw[i + 1]; break }
  }
  // S = mass of the listed (top-256) tokens in the full distribution
  let logS = qGreedy > 0 && pGreedy > 0 ? Math.log(pGreedy) - Math.log(qGreedy) : 0
  if (logS > 0) logS = 0
  const ids = new Uint32Array(n)
  const logprobs = new Float32Array(n)
  let listed = 0
  for (let i = 0; i < n; i++) {
    ids[i] = raw[2 * i]
    const q = raw[2 * i + 1]
    const lp = q > 0 ? Math.max(-64, Math.log(q) + logS) : -64
    logprobs[i] = lp
    listed += q
  }
  // when topK < 256 the renormalised mass of the first n entries is < 1
  const tail = Math.min(1, Math.max(0, 1 - listed * Math.exp(logS)))
  return { position, ids, logprobs, tailMass: tail }
}
