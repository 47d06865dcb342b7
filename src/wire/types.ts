/** In-memory forms of the messages of /meshllm/infer/1.0.0 (spec: protocols/infer.md). */

export const INFER_PROTOCOL = '/meshllm/infer/1.0.0'
/** an expert's own signed record, straight from the expert (protocols/record.md §6) */
export const RECORD_PROTOCOL = '/meshllm/record/1.0.0'
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
  /**
   * only when the request carried a `target` (teacher forcing) and this is the last frame
   * answered: the natural-log probability of that token in the expert's FULL distribution
   * (finite, ≤ 0; float32 on the wire). Absent when the expert cannot compute it exactly.
   */
  targetLogprob?: number
}

export interface OpenInfo {
  frame: Frame
  modelName: string
  contextLength: number
  freeSlots: number
  /**
   * only when the Open asked for `scorePrompt`: Σ_{i=1}^{n-1} log p(tokens[i] | tokens[0..i)),
   * the expert's exact log-likelihood of the prompt after its first token (finite, ≤ 0)
   */
  promptLogprob?: number
  /** the number of prompt tokens scored in promptLogprob (n − 1) */
  promptScored?: number
}

export type InferRequest =
  /**
   * Open; `target` (teacher forcing): the known token that follows the last evaluated position:
   * the last frame answered carries its exact logprob (Frame.targetLogprob). `scorePrompt`: the
   * OpenInfo carries the prompt's exact log-likelihood (OpenInfo.promptLogprob). `compactFrames`:
   * the router reads compact frames (one byte per logprob, protocols/infer.md §5); the expert
   * may then send every frame of the session compact.
   */
  | { type: 'open', protocolVersion: number, tokenizerFingerprint: Uint8Array, tokens: Uint32Array, topK: number, draft?: Uint32Array, target?: number, scorePrompt?: boolean, compactFrames?: boolean }
  /**
   * Step: erase the last `rollback` context tokens (rejected draft tokens), append `tokens`,
   * then, when `draft` is given, evaluate the draft tokens too: the expert answers with
   * draft.length + 1 frames (after `tokens`, then after each draft token).
   */
  | { type: 'step', tokens: Uint32Array, draft?: Uint32Array, rollback?: number, target?: number }
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
/** compact frames: one byte per logprob, q8 = round(-logprob / step) in 0..255, step = logprob_floor / (LOGPROB_SCALE · 255) */
export const COMPACT_LEVELS = 255

/**
 * a response carrying an error status and its (≤ 256-byte UTF-8) message; a HALTED response
 * may also carry the signed governance HALT envelope the expert holds (protocols/infer.md §3):
 * unverified bytes, which only the receiver's governance may verify and apply
 */
export interface ErrorResponse { status: Exclude<Status, Status.OK>, message: string, haltEnvelope?: Uint8Array }
/** decoded response to a Step */
export type FrameResponse = { status: Status.OK, frame: Frame } | ErrorResponse
/** decoded response to an Open */
export type OpenResponse = { status: Status.OK, open: OpenInfo } | ErrorResponse
