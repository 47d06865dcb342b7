/**
 * Named errors of the wire layer. Callers (and tests) tell them apart by `.name`;
 * a decoder never throws anything else on untrusted input.
 */
import { errorMessage } from '../util/errors.js'

/** not a valid message: truncated or garbage protobuf, missing/extra fields, bad status byte */
export class MalformedMessageError extends Error {
  static override name = 'MalformedMessageError'
  override name = 'MalformedMessageError'
}

/** message (or repeated field) larger than the protocol allows; thrown before parsing */
export class OversizedMessageError extends Error {
  static override name = 'OversizedMessageError'
  override name = 'OversizedMessageError'
}

/** a Frame that parses as protobuf but breaks the frame encoding rules (protocols/infer.md) */
export class InvalidFrameError extends Error {
  static override name = 'InvalidFrameError'
  override name = 'InvalidFrameError'
}

/** an expert record with a bad envelope, signature, peer id or out-of-range field */
export class InvalidRecordError extends Error {
  static override name = 'InvalidRecordError'
  override name = 'InvalidRecordError'
}

/** an expert record whose expires_at_ms is not after now */
export class ExpiredRecordError extends Error {
  static override name = 'ExpiredRecordError'
  override name = 'ExpiredRecordError'
}

/** the names above, for "is this one of ours" checks */
export const WIRE_ERROR_NAMES: ReadonlySet<string> = new Set([
  MalformedMessageError.name, OversizedMessageError.name, InvalidFrameError.name,
  InvalidRecordError.name, ExpiredRecordError.name
])

/** true for the wire layer's own errors */
export function isWireError (err: unknown): err is Error {
  return err instanceof Error && WIRE_ERROR_NAMES.has(err.name)
}

/**
 * Runs `fn`, letting the wire layer's own errors through and turning anything else
 * (RangeError from a truncated buffer, protons' MaxLengthError, ...) into `wrap(message)`.
 */
export function rethrowAs<T> (wrap: (message: string) => Error, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (isWireError(err)) throw err
    throw wrap(errorMessage(err))
  }
}
