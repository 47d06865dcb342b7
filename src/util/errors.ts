/** Named errors shared across the mesh. Tests check them by `.name`. */

export class BadMultiaddrError extends Error {
  static override name = 'BadMultiaddrError'
  override name = 'BadMultiaddrError'
}
export class NoPeersError extends Error {
  static override name = 'NoPeersError'
  override name = 'NoPeersError'
}
export class ModelNotFoundError extends Error {
  static override name = 'ModelNotFoundError'
  override name = 'ModelNotFoundError'
}
export class NoExpertsError extends Error {
  static override name = 'NoExpertsError'
  override name = 'NoExpertsError'
}
export class IncompatibleTokenizerError extends Error {
  static override name = 'IncompatibleTokenizerError'
  override name = 'IncompatibleTokenizerError'
}
export class ContextOverflowError extends Error {
  static override name = 'ContextOverflowError'
  override name = 'ContextOverflowError'
}
export class ExpertError extends Error {
  static override name = 'ExpertError'
  override name = 'ExpertError'
  constructor (message: string, readonly status?: number) { super(message) }
}
export class HaltedError extends Error {
  static override name = 'HaltedError'
  override name = 'HaltedError'
}
export class BusyError extends Error {
  static override name = 'BusyError'
  override name = 'BusyError'
}

/**
 * What a caught value may carry. Anything can be thrown, so every field is unknown until
 * checked; `?.` on a primitive or a missing field gives undefined, as on an Error.
 */
type Thrown = { message?: unknown, name?: unknown, code?: unknown } | null | undefined

/** a caught value's message: its `message` when it has one, else the value itself, as a string */
export function errorMessage (err: unknown): string {
  return String((err as Thrown)?.message ?? err)
}

/** a caught value's `name` (an Error's class name), when it is a string */
export function errorName (err: unknown): string | undefined {
  const name = (err as Thrown)?.name
  return typeof name === 'string' ? name : undefined
}

/** a Node.js system error's `code` (ENOENT, EEXIST, …), when it has one */
export function errorCode (err: unknown): string | undefined {
  const code = (err as Thrown)?.code
  return code == null ? undefined : String(code)
}

/** a caught value as an Error (an Error as it is; anything else wrapped, its text the message) */
export function asError (err: unknown): Error {
  return err instanceof Error ? err : new Error(errorMessage(err))
}
