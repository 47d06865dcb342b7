/**
 * Generation options: the accepted values, their documented defaults and the ONE validation
 * every interface uses — `meshllm generate` (src/cli/main.ts), the HTTP and gRPC APIs
 * (src/api/service.ts `prepare`), `--via` (src/router/generate-service.ts
 * `parseGenerateRequest`), and `Router.generate` itself (eval, agent, tests). The same bad
 * value gives the same InvalidGenerateOptionError, with the same message, on every interface.
 *
 * Each interface maps its own encoding first ("absent", proto3's 0 meaning "default", CLI
 * strings) to `undefined` (= the default below) or a number; out-of-range and unknown values
 * are for this module to refuse.
 */
import type { AggregationRule } from '../aggregate/types.js'
import type { TailModel } from '../aggregate/general.js'
import type { SelectionPolicy } from './selection.js'
import type { GenerateOptions } from './router.js'

export const RULES: readonly AggregationRule[] = ['mixture', 'product', 'median', 'trimmed']
export const WEIGHTINGS = ['uniform', 'perplexity'] as const
export const TAILS: readonly TailModel[] = ['uniform', 'unigram', 'bounded', 'context']
export const POLICIES: readonly SelectionPolicy[] = ['weighted', 'fastest', 'random']

/** documented defaults (README "Generation options", docs/api.md) */
export const GENERATE_DEFAULTS = Object.freeze({
  k: 3,
  maxTokens: 64,
  temperature: 0.8,
  topK: 0,
  topP: 0.95,
  rule: 'mixture' as AggregationRule,
  weighting: 'uniform' as const,
  tail: 'uniform' as TailModel,
  policy: 'weighted' as SelectionPolicy
})

/** inclusive ranges (top_p: (0, 1]) */
export const GENERATE_LIMITS = Object.freeze({
  k: [1, 64],
  maxTokens: [1, Number.MAX_SAFE_INTEGER],
  temperature: [0, 10],
  topK: [0, 256],
  topP: [0, 1],
  seed: [0, Number.MAX_SAFE_INTEGER]
} as const)

/**
 * Screening and reputation (docs/quality.md "Byzantine experts") are on by default for every
 * rule whenever a generation has at least this many experts per token (below it there is no
 * majority to judge by). `GenerateOptions.reputation` overrides.
 */
export const ROBUST_MIN_K = 3

/** whether screening and reputation are on for a generation with `k` experts per token */
export function robustByDefault (k: number, explicit?: boolean): boolean {
  return explicit ?? k >= ROBUST_MIN_K
}

/** a generation option out of range or unknown; `option` names it as the protocols do (top_p, max_tokens, …) */
export class InvalidGenerateOptionError extends Error {
  static override name = 'InvalidGenerateOptionError'
  override name = 'InvalidGenerateOptionError'
  constructor (readonly option: string, message: string) { super(message) }
}

/** the generation options every interface shares, as the router takes them (GenerateOptions) */
export type ValidGenerateOptions = Pick<GenerateOptions, 'k' | 'maxTokens' | 'temperature' | 'topK' | 'topP' | 'seed' | 'rule' | 'weighting' | 'tail' | 'policy'>

/** the same options as an interface receives them: names as strings, numbers unchecked */
export type GenerateOptionValues = {
  [K in keyof ValidGenerateOptions]?: NonNullable<ValidGenerateOptions[K]> extends string ? string : number
}

const show = (v: unknown): string => typeof v === 'string' ? `"${v.slice(0, 32)}"` : String(v)

/**
 * Checks every given option (undefined = the default) and returns them typed. Throws
 * InvalidGenerateOptionError for the first one out of range or unknown.
 * `limits.maxTokens`: a lower upper bound an interface imposes (the API's max_tokens limit).
 */
export function validateGenerateOptions (o: GenerateOptionValues, limits: { maxTokens?: number } = {}): ValidGenerateOptions {
  const out: ValidGenerateOptions = {}
  const int = (key: 'k' | 'maxTokens' | 'topK' | 'seed', name: string, max?: number): void => {
    const v = o[key]
    if (v === undefined) return
    const [lo, hi] = [GENERATE_LIMITS[key][0], Math.min(GENERATE_LIMITS[key][1], max ?? Infinity)]
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) throw new InvalidGenerateOptionError(name, `${name} must be an integer in [${lo}, ${hi}], got ${show(v)}`)
    out[key] = v
  }
  const num = (key: 'temperature' | 'topP', name: string, openMin: boolean): void => {
    const v = o[key]
    if (v === undefined) return
    const [lo, hi] = GENERATE_LIMITS[key]
    if (typeof v !== 'number' || !Number.isFinite(v) || v > hi || (openMin ? v <= lo : v < lo)) throw new InvalidGenerateOptionError(name, `${name} must be a number in ${openMin ? '(' : '['}${lo}, ${hi}], got ${show(v)}`)
    out[key] = v
  }
  const oneOf = <T extends string>(key: 'rule' | 'weighting' | 'tail' | 'policy', what: string, allowed: readonly T[]): void => {
    const v = o[key]
    if (v === undefined) return
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw new InvalidGenerateOptionError(key, `unknown ${what} ${show(v)}: use ${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}`)
    ;(out as Record<string, unknown>)[key] = v
  }
  int('k', 'k')
  int('maxTokens', 'max_tokens', limits.maxTokens)
  num('temperature', 'temperature', false)
  int('topK', 'top_k')
  num('topP', 'top_p', true)
  int('seed', 'seed')
  oneOf('rule', 'aggregation rule', RULES)
  oneOf('weighting', 'weighting', WEIGHTINGS)
  oneOf('tail', 'tail model', TAILS)
  oneOf('policy', 'selection policy', POLICIES)
  return out
}
