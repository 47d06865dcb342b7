/**
 * The CLI's exit codes and its usage error, importable by every command (and by the command
 * modules outside src/cli/) without importing the dispatcher in main.ts.
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
