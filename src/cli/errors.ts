/**
 * The CLI's exit codes, its usage error and the mapping of named errors to exit codes,
 * importable by every command (and by the command modules outside src/cli/) without
 * importing the dispatcher in main.ts.
 */

export const EXIT = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  NO_EXPERTS: 3,
  INCOMPATIBLE: 4,
  CONTEXT: 5,
  MODEL_NOT_FOUND: 6,
  NO_PEERS: 7,
  HALTED: 10,
  /** a keyholder's message was refused (stale, expired, in the future, below threshold, …) */
  REFUSED: 11
} as const

export class UsageError extends Error {
  static override name = 'UsageError'
  override name = 'UsageError'
}

/** errors that are the caller's input (bad option, file, key, multiaddr, bind): exit 2 */
const USAGE_ERRORS = new Set([
  'UsageError', 'InvalidGenerateOptionError', 'DevGovernanceError', 'DataDirInUseError', 'GenerateTokenFileError',
  'BadMultiaddrError', 'GovernanceConfigError', 'GovernanceKeyError', 'ApiConfigError', 'ApiTokenError', 'ApiTlsError',
  'InsecureBindError'
])

const CODES = new Map<string, number>([
  ['NoExpertsError', EXIT.NO_EXPERTS],
  ['IncompatibleTokenizerError', EXIT.INCOMPATIBLE],
  ['ContextOverflowError', EXIT.CONTEXT],
  ['ModelNotFoundError', EXIT.MODEL_NOT_FOUND],
  ['NoPeersError', EXIT.NO_PEERS],
  ['HaltedError', EXIT.HALTED],
  ['GovernanceRefusedError', EXIT.REFUSED]
])

/** the exit code of an error, by its name (README "Exit codes") */
export function exitCodeFor (err: any): number {
  // RemoteGenerateError (--via): the routing peer's error name decides
  const name = err?.name === 'RemoteGenerateError' && typeof err.remoteName === 'string' ? err.remoteName : err?.name
  if (typeof name !== 'string') return EXIT.ERROR
  if (USAGE_ERRORS.has(name)) return EXIT.USAGE
  return CODES.get(name) ?? EXIT.ERROR
}
