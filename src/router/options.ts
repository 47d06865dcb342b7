/**
 * Generation options: ONE zod schema (GenerateOptionsSchema) holding every accepted value, its
 * documented default and its bound, and the ONE validation every interface derives from it —
 * `meshllm generate` (src/cli/generate.ts), the HTTP and gRPC APIs (src/api/generation.ts `prepare`),
 * `--via` (src/router/generate-service.ts `parseGenerateRequest`), and `Router.generate`
 * itself (eval, agent, tests). The same bad value gives the same InvalidGenerateOptionError,
 * with the same message, on every interface: the messages are part of the schema.
 *
 * Each interface maps its own encoding first ("absent", proto3's 0 meaning "default", CLI
 * strings, JSON's string-or-array `stop`) to `undefined` (= the default below) or a value;
 * out-of-range, mistyped and unknown values are for this module to refuse.
 */
import { z } from 'zod'
import type { AggregationRule } from '../aggregate/types.js'
import type { TailModel } from '../aggregate/general.js'
import type { SelectionPolicy } from './selection.js'
import type { GenerateOptions } from './router.js'

export const RULES: readonly AggregationRule[] = ['mixture', 'product', 'median', 'trimmed']
export const WEIGHTINGS = ['uniform', 'perplexity', 'online'] as const
export const TAILS: readonly TailModel[] = ['uniform', 'unigram', 'bounded', 'context', 'local']
export const POLICIES: readonly SelectionPolicy[] = ['weighted', 'fastest', 'random']

/** documented defaults (README "Generation options", docs/api.md): an option left undefined means this */
export const GENERATE_DEFAULTS = Object.freeze({
  /** experts per token */
  k: 3,
  /** tokens to generate (the APIs default to what fits the context, at most 16 / 256 / 64) */
  maxTokens: 64,
  /** 0 = greedy */
  temperature: 0.8,
  /** 0 = off */
  topK: 0,
  /** nucleus sampling; 1 = off */
  topP: 0.95,
  rule: 'mixture' as AggregationRule,
  /**
   * 'online': weights from each expert's frames on the tokens generated so far, which the
   * router checks itself, starting from what the router remembers of it and averaged over the
   * step's set and its leave-one-out sets (src/router/online-weights.ts; 'perplexity' trusts each expert's own score of the prompt, which a
   * lying expert can inflate: opt-in; docs/quality.md §5)
   */
  weighting: 'online' as (typeof WEIGHTINGS)[number],
  /** the best wire-only tail; a router with a local model uses 'local' (defaultTail) */
  tail: 'context' as TailModel,
  policy: 'weighted' as SelectionPolicy
})

/**
 * the tail a generation uses when its options name none: 'local' when the router runs a local
 * model (RouterOptions.localModel), else GENERATE_DEFAULTS.tail (the best wire-only tail)
 */
export function defaultTail (hasLocalModel: boolean): TailModel {
  return hasLocalModel ? 'local' : GENERATE_DEFAULTS.tail
}

/** inclusive ranges (top_p: (0, 1]) */
export const GENERATE_LIMITS = Object.freeze({
  k: [1, 64],
  maxTokens: [1, Number.MAX_SAFE_INTEGER],
  temperature: [0, 10],
  topK: [0, 256],
  topP: [0, 1],
  seed: [0, Number.MAX_SAFE_INTEGER]
} as const)

/** stop strings: at most `count` of them, each of 1 to `length` characters */
export const STOP_LIMITS = Object.freeze({ count: 16, length: 256 } as const)

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

/** the options the schema checks, as the router takes them (GenerateOptions) */
export type ValidGenerateOptions = Pick<GenerateOptions, 'k' | 'maxTokens' | 'temperature' | 'topK' | 'topP' | 'seed' | 'stop' | 'rule' | 'weighting' | 'tail' | 'policy' | 'reputation'>

/** the same options as an interface receives them: anything, for the schema to check */
export type GenerateOptionValues = { [K in keyof ValidGenerateOptions]?: unknown }

type OptionKey = keyof ValidGenerateOptions

/** each option's name in errors: the protocols' (snake_case) names */
export const OPTION_NAMES: Readonly<Record<OptionKey, string>> = Object.freeze({
  k: 'k',
  maxTokens: 'max_tokens',
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  seed: 'seed',
  stop: 'stop',
  rule: 'rule',
  weighting: 'weighting',
  tail: 'tail',
  policy: 'policy',
  reputation: 'reputation'
})

/** a refused value in a message: never throws (a remote JSON object's `toString` may be anything) */
const show = (v: unknown): string => typeof v === 'string'
  ? `"${v.slice(0, 32)}"`
  : Array.isArray(v) ? `a list of ${v.length}` : v !== null && typeof v === 'object' ? 'an object' : String(v)
type Issue = { input?: unknown }
const msg = (f: (input: unknown) => string): { error: (iss: Issue) => string } => ({ error: (iss) => f(iss.input) })

function integer (name: string, [lo, hi]: readonly [number, number]): z.ZodOptional<z.ZodInt> {
  const e = msg(v => `${name} must be an integer in [${lo}, ${hi}], got ${show(v)}`)
  return z.int(e).min(lo, e).max(hi, e).optional()
}

function number (name: string, [lo, hi]: readonly [number, number], openMin: boolean): z.ZodOptional<z.ZodNumber> {
  const e = msg(v => `${name} must be a number in ${openMin ? '(' : '['}${lo}, ${hi}], got ${show(v)}`)
  return (openMin ? z.number(e).gt(lo, e) : z.number(e).min(lo, e)).max(hi, e).optional()
}

function oneOf<T extends string> (what: string, allowed: readonly T[]): z.ZodOptional<z.ZodEnum<{ [V in T]: V }>> {
  const e = msg(v => `unknown ${what} ${show(v)}: use ${allowed.slice(0, -1).join(', ')} or ${allowed[allowed.length - 1]}`)
  return z.enum(allowed as [T, ...T[]], e).optional()
}

function stopStrings (): z.ZodOptional<z.ZodArray<z.ZodString>> {
  const each = msg(() => `each stop sequence must be a string of 1–${STOP_LIMITS.length} characters`)
  return z.array(z.string(each).min(1, each).max(STOP_LIMITS.length, each), msg(v => `stop must be a list of strings, got ${show(v)}`))
    .max(STOP_LIMITS.count, msg(() => `at most ${STOP_LIMITS.count} stop sequences`))
    .optional()
}

/**
 * The schema. `maxTokens`: a lower upper bound an interface imposes (the API's and --via's
 * max_tokens limit); `maxTokensName`: the name an interface gives max_tokens
 * (max_completion_tokens). Unknown keys are ignored (GenerateOptions has more: signal, …).
 */
export function generateOptionsSchema (o: { maxTokens?: number, maxTokensName?: string } = {}) {
  const L = GENERATE_LIMITS
  return z.object({
    k: integer(OPTION_NAMES.k, L.k),
    maxTokens: integer(o.maxTokensName ?? OPTION_NAMES.maxTokens, [L.maxTokens[0], Math.min(L.maxTokens[1], o.maxTokens ?? Infinity)]),
    temperature: number(OPTION_NAMES.temperature, L.temperature, false),
    topK: integer(OPTION_NAMES.topK, L.topK),
    topP: number(OPTION_NAMES.topP, L.topP, true),
    seed: integer(OPTION_NAMES.seed, L.seed),
    rule: oneOf('aggregation rule', RULES),
    weighting: oneOf('weighting', WEIGHTINGS),
    tail: oneOf('tail model', TAILS),
    policy: oneOf('selection policy', POLICIES),
    stop: stopStrings(),
    reputation: z.boolean(msg(v => `reputation must be true or false, got ${show(v)}`)).optional()
  })
}

/** the schema with the library's own bounds (no interface limit) */
export const GenerateOptionsSchema = generateOptionsSchema()

/** schemas per interface limit (a handful: they come from configuration, never from a request) */
const schemas = new Map<string, typeof GenerateOptionsSchema>([['|', GenerateOptionsSchema]])

/**
 * Checks every given option (undefined = the default) against the schema and returns them
 * typed. Throws InvalidGenerateOptionError for the first one (in the schema's order) out of
 * range, mistyped or unknown.
 * `limits.maxTokens`: a lower upper bound an interface imposes (the API's max_tokens limit);
 * `limits.maxTokensName`: the interface's name for max_tokens in the error.
 */
export function validateGenerateOptions (o: GenerateOptionValues, limits: { maxTokens?: number, maxTokensName?: string } = {}): ValidGenerateOptions {
  const key = `${limits.maxTokens ?? ''}|${limits.maxTokensName ?? ''}`
  let schema = schemas.get(key)
  if (schema == null) {
    schema = generateOptionsSchema(limits)
    if (schemas.size < 64) schemas.set(key, schema)
  }
  const r = schema.safeParse(o)
  if (r.success) return r.data as ValidGenerateOptions
  const issue = r.error.issues[0]
  const option = issue.path[0] as OptionKey
  throw new InvalidGenerateOptionError(option === 'maxTokens' ? (limits.maxTokensName ?? OPTION_NAMES.maxTokens) : OPTION_NAMES[option] ?? String(option), issue.message)
}
