/** In-memory forms of the messages of /meshllm/infer/1.0.0 (spec: protocols/infer.md). */

export const INFER_PROTOCOL = '/meshllm/infer/1.0.0'
export const INFER_PROTOCOL_VERSION = 1
/** LLaMA-3 vocabulary size: every token id on the wire is below this. */
export const VOCAB_SIZE = 128256
export const MAX_FRAME_ENTRIES = 256
/** most draft tokens one Step may carry (speculative decoding) */
export const MAX_DRAFT_TOKENS = 32
/** largest length-prefixed message either side accepts, bytes */
export const MAX_REQUEST_BYTES = 64 * 1024
export const MAX_RESPONSE_BYTES = 4 * 1024
/** logprob quantisation: q = round(-logprob * LOGPROB_SCALE), uint16 */
export const LOGPROB_SCALE = 1024

/** Status byte that starts every response message (Lodestar req/resp style). */
export enum Status {
  OK = 0,
  INVALID_REQUEST = 1,
  INCOMPATIBLE = 2,
  BUSY = 3,
  CONTEXT_FULL = 4,
  HALTED = 5,
  INTERNAL = 6,
  SHUTTING_DOWN = 7
}

export interface Frame {
  /** number of context tokens this distribution follows (i.e. it predicts token index `position`) */
  position: number
  /** listed ids, ascending */
  ids: Uint32Array
  /** logprobs of `ids`, same order (after quantisation when decoded) */
  logprobs: Float32Array
  tailMass: number
}

export interface OpenInfo {
  frame: Frame
  modelName: string
  contextLength: number
  freeSlots: number
}

export type InferRequest =
  | { type: 'open', protocolVersion: number, tokenizerFingerprint: Uint8Array, tokens: Uint32Array, topK: number, draft?: Uint32Array }
  /**
   * Step: erase the last `rollback` context tokens (rejected draft tokens), append `tokens`,
   * then, when `draft` is given, evaluate the draft tokens too: the expert answers with
   * draft.length + 1 frames (after `tokens`, then after each draft token).
   */
  | { type: 'step', tokens: Uint32Array, draft?: Uint32Array, rollback?: number }
  | { type: 'close' }

export type InferResponse =
  | { status: Status.OK, frame: Frame }
  | { status: Status.OK, open: OpenInfo }
  | { status: Exclude<Status, Status.OK>, message: string }

/** most tokens one request may carry (bounds the decoder's allocation; protons `limits`) */
export const MAX_REQUEST_TOKENS = 131072
/** tokenizer fingerprints are SHA-256 digests */
export const FINGERPRINT_BYTES = 32
/** largest UTF-8 message after a non-OK status byte */
export const MAX_ERROR_MESSAGE_BYTES = 256
/** largest signed expert-record envelope anyone publishes or accepts */
export const MAX_RECORD_BYTES = 4096
/** largest quantised logprob (uint16): logprobs below -65535/1024 ≈ -64 nats clamp to it */
export const MAX_LOGPROB_Q = 0xffff

/** a response carrying an error status and its (≤ 256-byte UTF-8) message */
export interface ErrorResponse { status: Exclude<Status, Status.OK>, message: string }
/** decoded response to a Step */
export type FrameResponse = { status: Status.OK, frame: Frame } | ErrorResponse
/** decoded response to an Open */
export type OpenResponse = { status: Status.OK, open: OpenInfo } | ErrorResponse
