/**
 * API errors: one kind per gRPC status we use, mapped to gRPC codes and to OpenAI-shaped HTTP
 * errors. Every error leaving src/api goes through `toApiError` (docs/api.md#errors).
 */
import { status as GrpcStatus } from '@grpc/grpc-js'

export type ApiErrorKind =
  | 'invalid_argument'
  | 'not_found'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'failed_precondition'
  | 'permission_denied'
  | 'unauthenticated'
  | 'resource_exhausted'
  | 'payload_too_large'
  | 'internal'

export class ApiError extends Error {
  static override name = 'ApiError'
  override name = 'ApiError'
  constructor (readonly kind: ApiErrorKind, message: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message)
  }
}

export const invalid = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError('invalid_argument', message, param, code)

/** Maps any error (ours, the router's, governance's) to an ApiError. Never throws. */
export function toApiError (err: unknown): ApiError {
  if (err instanceof ApiError) return err
  // anything can be thrown: each field is checked where it is used
  const e = err as { remoteName?: unknown, name?: unknown, message?: unknown } | null | undefined
  const name = e?.remoteName ?? e?.name ?? ''
  const message = String(e?.message ?? e ?? 'unknown error')
  switch (name) {
    case 'HaltedError': return new ApiError('failed_precondition', message, null, 'mesh_halted')
    case 'NoExpertsError': return new ApiError('unavailable', message, null, 'no_experts')
    case 'IncompatibleTokenizerError': return new ApiError('unavailable', message, null, 'incompatible_experts')
    case 'ContextOverflowError': return new ApiError('invalid_argument', message, null, 'context_length_exceeded')
    case 'ModelNotFoundError': return new ApiError('not_found', message, 'model', 'model_not_found')
    case 'BusyError': return new ApiError('resource_exhausted', message, null, 'busy')
    case 'TimeoutError': return new ApiError('deadline_exceeded', message.length > 0 ? message : 'deadline exceeded', null, 'timeout')
    case 'AbortError': return new ApiError('deadline_exceeded', 'the request was cancelled or its deadline passed', null, 'cancelled')
    case 'GovernanceKeyError': case 'EnvelopeError': case 'GovernanceConfigError': return new ApiError('invalid_argument', message)
    case 'UsageError': case 'BadMultiaddrError': case 'RangeError': case 'InvalidTaskError': return new ApiError('invalid_argument', message)
    case 'TaskNotFoundError': return new ApiError('not_found', message, 'id', 'task_not_found')
    default: return new ApiError('internal', message)
  }
}

export const GRPC_CODE: Readonly<Record<ApiErrorKind, GrpcStatus>> = Object.freeze({
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  not_found: GrpcStatus.NOT_FOUND,
  unavailable: GrpcStatus.UNAVAILABLE,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  resource_exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  payload_too_large: GrpcStatus.RESOURCE_EXHAUSTED,
  internal: GrpcStatus.INTERNAL
})

/** HTTP status and OpenAI error `type` of each kind */
export const HTTP_ERROR: Readonly<Record<ApiErrorKind, { status: number, type: string }>> = Object.freeze({
  invalid_argument: { status: 400, type: 'invalid_request_error' },
  not_found: { status: 404, type: 'not_found_error' },
  unavailable: { status: 503, type: 'service_unavailable' },
  deadline_exceeded: { status: 504, type: 'timeout' },
  failed_precondition: { status: 409, type: 'conflict_error' },
  permission_denied: { status: 403, type: 'permission_error' },
  unauthenticated: { status: 401, type: 'authentication_error' },
  resource_exhausted: { status: 429, type: 'rate_limit_error' },
  payload_too_large: { status: 413, type: 'invalid_request_error' },
  internal: { status: 500, type: 'server_error' }
})

/** OpenAI's error body */
export function openAiErrorBody (e: ApiError): { error: { message: string, type: string, param: string | null, code: string | null } } {
  const type = e.code === 'mesh_halted' ? 'mesh_halted' : HTTP_ERROR[e.kind].type
  return { error: { message: e.message, type, param: e.param, code: e.code } }
}
