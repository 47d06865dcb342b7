/**
 * Defaults of the CLI's own options, shared by the command modules (for --help) and the
 * implementations they load (a command module never imports the implementation statically,
 * and an implementation never imports its command module: no cycles, light --help).
 */

/** keyholder messages (halt, resume, vote, phase, sign), keys and governance files */
export const KEYHOLDER_DEFAULTS = Object.freeze({
  haltReason: 'halted by keyholder',
  resumeReason: 'resumed by keyholders',
  /** lifetime of a signed message (hours); at most MAX_LIFETIME_MS (src/governance/envelope.ts) */
  ttlHours: 7 * 24,
  /** MAX_LIFETIME_MS in hours (envelope.ts loads libp2p crypto; test/unit/cli-help.spec.ts checks they agree) */
  maxTtlHours: 30 * 24,
  /** review period of deploy-major motions in a new governance file (hours) */
  reviewHours: 24,
  maxReviewHours: 24 * 365,
  /** `keys generate` without --out: <per-user dir>/keys/<name>.key */
  keyName: 'keyholder'
})

/** `meshllm tasks` without --limit */
export const TASKS_LIMIT_DEFAULT = 50

/** `meshllm demo` */
export const DEMO_DEFAULTS = Object.freeze({ maxTokens: 48, k: 3, prompt: 'The kernel' })
