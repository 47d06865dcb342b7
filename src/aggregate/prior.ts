/**
 * Tail priors: the shape over the vocabulary that the 'unigram' and 'bounded' tails give an
 * expert's unlisted tokens (docs/aggregation.md §1, docs/quality.md). A prior is a positive
 * weight per token id, normalised to mean 1 over the vocabulary, so the uniform tail is the
 * prior whose weights are all 1.
 *
 * File format (`models/tail-prior.bin.gz`, gzip of):
 *   8 bytes  "MLPRIOR1"
 *   uint32   vocabulary size V (little-endian)
 *   float32  step s (nats per level, little-endian)
 *   V bytes  q(t): weight(t) ∝ exp(−s · q(t))   (q = 0 the heaviest token, 255 the floor)
 * 1/8 nat per level over 32 nats: quantisation changes a weight by at most 6 %.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync, gzipSync } from 'node:zlib'
import { errorMessage } from '../util/errors.js'

export interface TailPrior {
  /** weight per token id, all > 0, mean 1 over the vocabulary */
  weights: Float64Array
  /** Σ weights (= vocabulary size) */
  total: number
  /** where it came from (file name, 'uniform', …) */
  name: string
  /** token ids by descending weight (ties by ascending id); computed on first use */
  order?: Uint32Array
  /**
   * a prior built per step (the 'local' tail) sorts only its heaviest ids: `head` holds, by
   * descending weight, its heaviest ids (none lighter than `headBound`), and every other id weighs at
   * most `headBound`; `order` is then only computed if a consumer needs more
   */
  head?: Uint32Array
  headBound?: number
}

const MAGIC = 'MLPRIOR1'
/** default quantisation step: 1/8 nat */
export const PRIOR_STEP = 0.125

export class TailPriorError extends Error {
  static override name = 'TailPriorError'
  override name = 'TailPriorError'
}

/** A prior from non-negative weights (any scale): floored at 1e-12 of the largest, normalised to mean 1. */
export function tailPriorFromWeights (w: ArrayLike<number>, name = 'custom'): TailPrior {
  const V = w.length
  if (V === 0) throw new TailPriorError('empty prior')
  let max = 0
  for (let i = 0; i < V; i++) {
    const x = w[i]
    if (!(x >= 0) || x === Infinity) throw new TailPriorError(`bad prior weight ${x} at ${i}`)
    if (x > max) max = x
  }
  if (!(max > 0)) throw new TailPriorError('prior weights are all zero')
  const floor = max * 1e-12
  const weights = new Float64Array(V)
  let sum = 0
  for (let i = 0; i < V; i++) sum += (weights[i] = w[i] > floor ? w[i] : floor)
  const scale = V / sum
  for (let i = 0; i < V; i++) weights[i] *= scale
  return { weights, total: V, name }
}

/** ids by descending weight, ties by ascending id (cached on the prior) */
export function priorOrder (prior: TailPrior): Uint32Array {
  if (prior.order == null) {
    const w = prior.weights
    const ids = Array.from({ length: w.length }, (_, i) => i)
    ids.sort((a, b) => w[b] - w[a] || a - b)
    prior.order = Uint32Array.from(ids)
  }
  return prior.order
}

/** the heaviest ids first: `head` and its bound when the prior has one, else the full order (bound 0) */
export function priorHead (prior: TailPrior): { order: Uint32Array, bound: number } {
  if (prior.order == null && prior.head != null) return { order: prior.head, bound: prior.headBound ?? 0 }
  return { order: priorOrder(prior), bound: 0 }
}

/** ids in the head of a per-step prior: enough for the cap of the 'bounded' shape almost always */
export const LOCAL_HEAD = 2048

/**
 * The 'local' tail's prior for one step: the next-token distribution of a model the router
 * runs itself (`probs`, length V, any positive scale; src/router/local-model.ts). Like
 * tailPriorFromWeights, but O(V) instead of a sort: only the heaviest ≈ LOCAL_HEAD ids are
 * ordered (histogram of log weights, then a sort of that head).
 */
export function localTailPrior (probs: ArrayLike<number>, name = 'local'): TailPrior {
  const prior = tailPriorFromWeights(probs, name)
  const w = prior.weights
  const V = w.length
  const BUCKETS = 256
  const PER_BUCKET = 0.25 // nats
  let max = 0
  for (let i = 0; i < V; i++) if (w[i] > max) max = w[i]
  const lmax = Math.log(max)
  const counts = new Uint32Array(BUCKETS)
  const bucketOf = (x: number): number => Math.min(BUCKETS - 1, Math.floor((lmax - Math.log(x)) / PER_BUCKET))
  for (let i = 0; i < V; i++) counts[bucketOf(w[i])]++
  // the first buckets holding at most LOCAL_HEAD ids together (at least the first bucket)
  let take = 0
  let n = 0
  while (take < BUCKETS - 1 && n + counts[take] <= LOCAL_HEAD) n += counts[take++]
  if (take === 0) { n = counts[0]; take = 1 }
  if (take >= BUCKETS - 1) {
    priorOrder(prior)
    return prior
  }
  const ids: number[] = []
  // the bound is the heaviest id left out, exactly (not the bucket edge: no rounding doubt)
  let bound = 0
  for (let i = 0; i < V; i++) {
    if (bucketOf(w[i]) < take) ids.push(i)
    else if (w[i] > bound) bound = w[i]
  }
  ids.sort((a, b) => w[b] - w[a] || a - b)
  prior.head = Uint32Array.from(ids)
  prior.headBound = bound
  return prior
}

/** Prior → file bytes (gzip), quantised to `step` nats per level. */
export function encodeTailPrior (prior: TailPrior, step = PRIOR_STEP): Uint8Array {
  const V = prior.weights.length
  let max = 0
  for (let i = 0; i < V; i++) max = Math.max(max, prior.weights[i])
  const lmax = Math.log(max)
  const raw = new Uint8Array(16 + V)
  raw.set(new TextEncoder().encode(MAGIC), 0)
  const dv = new DataView(raw.buffer)
  dv.setUint32(8, V, true)
  dv.setFloat32(12, step, true)
  for (let i = 0; i < V; i++) {
    const q = Math.round((lmax - Math.log(prior.weights[i])) / step)
    raw[16 + i] = q < 0 ? 0 : q > 255 ? 255 : q
  }
  return gzipSync(raw, { level: 9 })
}

/** File bytes (gzip or raw) → prior. Throws TailPriorError. */
export function decodeTailPrior (bytes: Uint8Array, name = 'prior'): TailPrior {
  let raw: Uint8Array
  try {
    raw = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes
  } catch (err) {
    throw new TailPriorError(`${name}: not gzip: ${errorMessage(err)}`)
  }
  if (raw.byteLength < 16 || new TextDecoder().decode(raw.subarray(0, 8)) !== MAGIC) throw new TailPriorError(`${name}: not a tail prior (magic)`)
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  const V = dv.getUint32(8, true)
  const step = dv.getFloat32(12, true)
  if (V === 0 || raw.byteLength !== 16 + V) throw new TailPriorError(`${name}: ${raw.byteLength - 16} levels for a vocabulary of ${V}`)
  if (!(step > 0 && step < 10)) throw new TailPriorError(`${name}: bad step ${step}`)
  const w = new Float64Array(V)
  for (let i = 0; i < V; i++) w[i] = Math.exp(-step * raw[16 + i])
  return tailPriorFromWeights(w, name)
}

/** Reads a prior file (sync). */
export function loadTailPrior (path: string): TailPrior {
  return decodeTailPrior(readFileSync(path), path.split('/').pop() ?? path)
}

/** <package root>/models/tail-prior.bin.gz, from dist/src/aggregate or src/aggregate */
export function defaultTailPriorPath (): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'models', 'tail-prior.bin.gz')
    if (existsSync(p)) return p
    const parent = dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  return undefined
}

const cache = new Map<number, TailPrior>()

/**
 * The shipped prior (models/tail-prior.bin.gz: the test models' own unlisted mass, see
 * docs/quality.md) for this vocabulary size, loaded once. Throws TailPriorError when there is
 * none for `vocabSize`.
 */
export function defaultTailPrior (vocabSize: number): TailPrior {
  let p = cache.get(vocabSize)
  if (p != null) return p
  const path = defaultTailPriorPath()
  if (path == null) throw new TailPriorError('models/tail-prior.bin.gz not found')
  p = loadTailPrior(path)
  if (p.weights.length !== vocabSize) throw new TailPriorError(`the shipped tail prior is for a vocabulary of ${p.weights.length}, not ${vocabSize}`)
  cache.set(vocabSize, p)
  return p
}
