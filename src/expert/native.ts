/**
 * Loader for the native frame helper (native/build/meshllm_native.node, built by
 * scripts/build-native.mjs; see docs/frames.md). It reads a decoded position's logits row
 * straight from llama.cpp and computes the exact top-k frame in one call (≈ 0.3 ms instead of
 * ≈ 5 ms for node-llama-cpp's two samplers).
 *
 * `nativeFramesFor()` returns undefined — and the caller uses node-llama-cpp's samplers — when
 * the helper is not built, cannot be loaded, fails its layout check against this context, or
 * when the environment sets MESHLLM_NATIVE=0. The reason is logged once
 * (DEBUG=meshllm:expert:native) and available from `nativeStatus()`.
 */
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { defaultLogger } from '@libp2p/logger'
import type { LlamaContext, LlamaModel } from 'node-llama-cpp'
import { errorMessage } from '../util/errors.js'

const log = defaultLogger().forComponent('meshllm:expert:native')

interface Addon {
  probe: (ctx: object, model: object, contextSize: number, vocabSize: number) => string
  topk: (ctx: object, batchLogitIndex: number, ids: Uint32Array, logprobs: Float32Array, target?: number, out?: Float64Array) => number
  /** helpers built before teacher forcing lack it */
  logprob?: (ctx: object, batchLogitIndex: number, target: number, out: Float64Array) => number
  accumulate?: (ctx: object, batchLogitIndex: number, skip: Uint32Array, weight: number, acc: Float64Array) => number
  frameOf: (logits: Float32Array, ids: Uint32Array, logprobs: Float32Array, generic?: boolean, target?: number, out?: Float64Array) => number
  logprobOf?: (logits: Float32Array, target: number, generic?: boolean) => number
  info: () => { library: string, offsets: Record<string, number>, variant: string }
}

/** node-llama-cpp internals the helper is handed (not in its public types): the native context and model */
interface NativeHandles {
  /** LlamaContext._ctx: the native AddonContext */
  context: { _ctx?: { getContextSize: () => number } }
  /** LlamaModel._model: the native AddonModel */
  model: { _model?: object }
}

/** topk() result codes below zero */
export const NATIVE_NO_LOGITS = -1
export const NATIVE_NOT_FINITE = -2
export const NATIVE_NO_CONTEXT = -3
export const NATIVE_BAD_ARGS = -4

export interface NativeFrames {
  /**
   * Fills `ids` / `logprobs` (same length, at most 256) with the most probable tokens of the
   * batch position's logits, sorted by logprob descending (ties: lower id first), and returns
   * the tail mass; a negative code when it cannot (then use the fallback for that position).
   */
  topk: (batchLogitIndex: number, ids: Uint32Array, logprobs: Float32Array) => number
  /**
   * The same, and also the exact full-vocabulary logprob of token `target` (logit − logsumexp
   * of the same row, not clamped) written to out[0] (teacher forcing). out[0] is NaN when it
   * could not be computed (a helper built before this function: then undefined is never
   * returned, the frame still is).
   */
  topkWithTarget: (batchLogitIndex: number, ids: Uint32Array, logprobs: Float32Array, target: number, out: Float64Array) => number
  /**
   * The exact logprob of `target` at the batch position (no top-k: prompt scoring) into out[0];
   * 0, or a negative code (then out[0] is meaningless). NATIVE_BAD_ARGS when the helper is
   * older than this function.
   */
  logprob: (batchLogitIndex: number, target: number, out: Float64Array) => number
  /**
   * acc[t] += weight · p(t) for every token t of the position's full distribution that is not
   * in `skip` (offline tail-prior estimation); returns the mass added, or a negative code
   */
  accumulate: (batchLogitIndex: number, skip: Uint32Array, weight: number, acc: Float64Array) => number
}

let addon: Addon | undefined
let loadError: string | undefined
const attached = new WeakMap<object, NativeFrames | string>()
let lastReason = 'not attached yet'

/** where the helper is: <package root>/native/build/meshllm_native.node (from dist/src/expert or src/expert) */
export function nativeAddonPath (): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'native', 'build', 'meshllm_native.node')
    if (existsSync(p)) return p
    const parent = dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  return undefined
}

export function nativeDisabled (): boolean {
  return process.env.MESHLLM_NATIVE === '0' || process.env.MESHLLM_NATIVE === 'false'
}

function loadAddon (): Addon | undefined {
  if (addon != null || loadError != null) return addon
  const path = nativeAddonPath()
  if (path == null) {
    loadError = 'native/build/meshllm_native.node is not built (run node scripts/build-native.mjs)'
    return undefined
  }
  try {
    addon = createRequire(import.meta.url)(path) as Addon
    log('loaded %s', path)
  } catch (err) {
    loadError = `cannot load ${path}: ${errorMessage(err)}`
  }
  return addon
}

/**
 * The native frame helper bound to this context, or undefined (fallback). Probed once per
 * context; never throws.
 */
export function nativeFramesFor (context: LlamaContext, model: LlamaModel, vocabSize: number): NativeFrames | undefined {
  if (nativeDisabled()) {
    lastReason = 'disabled by MESHLLM_NATIVE=0'
    return undefined
  }
  const ctx = (context as unknown as NativeHandles['context'])._ctx
  const mdl = (model as unknown as NativeHandles['model'])._model
  if (ctx == null || mdl == null) {
    lastReason = 'node-llama-cpp internals (_ctx / _model) not found'
    log(lastReason)
    return undefined
  }
  const known = attached.get(ctx)
  if (known != null) {
    if (typeof known === 'string') { lastReason = known; return undefined }
    lastReason = ''
    return known
  }
  const a = loadAddon()
  let reason: string
  if (a == null) {
    reason = loadError ?? 'not loaded'
  } else {
    try {
      const contextSize = ctx.getContextSize()
      reason = a.probe(ctx, mdl, contextSize, vocabSize)
    } catch (err) {
      reason = `probe failed: ${errorMessage(err)}`
    }
  }
  if (reason !== '') {
    log('native frames unavailable, using node-llama-cpp samplers: %s', reason)
    attached.set(ctx, reason)
    lastReason = reason
    return undefined
  }
  const { topk, probe } = a!
  const logprobFn = a!.logprob
  const accumulateFn = a!.accumulate
  let warned = false
  /** calls fn; on NATIVE_NO_CONTEXT probes again once (the helper keeps the last 64 probed contexts; refused when disposed) */
  const withProbe = (fn: () => number): number => {
    let r = fn()
    if (r === NATIVE_NO_CONTEXT) {
      try {
        if (probe(ctx, mdl, ctx.getContextSize(), vocabSize) === '') r = fn()
      } catch {}
    }
    if (r < 0 && !warned) {
      warned = true
      log('native frame refused (code %d), using the samplers for this position', r)
    }
    return r
  }
  const frames: NativeFrames = {
    topk: (batchLogitIndex, ids, logprobs) => withProbe(() => topk(ctx, batchLogitIndex, ids, logprobs)),
    topkWithTarget: (batchLogitIndex, ids, logprobs, target, out) => {
      out[0] = NaN
      return withProbe(() => topk(ctx, batchLogitIndex, ids, logprobs, target, out))
    },
    logprob: (batchLogitIndex, target, out) => {
      if (logprobFn == null) return NATIVE_BAD_ARGS
      return withProbe(() => logprobFn(ctx, batchLogitIndex, target, out))
    },
    accumulate: (batchLogitIndex, skip, weight, acc) => {
      if (accumulateFn == null) return NATIVE_BAD_ARGS
      return withProbe(() => accumulateFn(ctx, batchLogitIndex, skip, weight, acc))
    }
  }
  log('native frames attached (%s)', a!.info().library)
  attached.set(ctx, frames)
  lastReason = ''
  return frames
}

/** '' when the last nativeFramesFor() call attached the helper, else why not */
export function nativeStatus (): string {
  return lastReason
}

/** diagnostics: the helper's libllama, field offsets and code path, or why it did not load */
export function nativeInfo (): { loaded: boolean, path?: string, error?: string, library?: string, variant?: string } {
  const a = nativeDisabled() ? undefined : loadAddon()
  if (a == null) return { loaded: false, path: nativeAddonPath(), error: nativeDisabled() ? 'disabled by MESHLLM_NATIVE=0' : loadError }
  const i = a.info()
  return { loaded: true, path: nativeAddonPath(), library: i.library !== '' ? i.library : undefined, variant: i.variant }
}
