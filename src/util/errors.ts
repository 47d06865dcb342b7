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
