/**
 * Messages of /meshllm/infer/1.0.0 (protocols/infer.md). Each function handles one message
 * body; the unsigned-varint length prefix around it belongs to the stream layer.
 *
 * Requests are protobuf `InferRequest` with packed `tokens`, coded by hand here because the
 * protons 9 generator has no packed repeated fields (it would write and expect one tag per
 * token). Decoding accepts packed and unpacked tokens, as protobuf requires, and bounds their
 * number by MAX_REQUEST_TOKENS. Responses are one status byte, then a protobuf Frame / OpenInfo
 * (status OK) or a UTF-8 message of at most 256 bytes (any other status).
 */
import { MalformedMessageError, OversizedMessageError, rethrowAs } from './errors.js'
import { decodeFrame, frameFromPb, frameToPb, FRAME_WIRE_TYPES, type FrameEncoding } from './frame.js'
import { Frame as PbFrame, OpenInfo as PbOpenInfo } from './pb/infer.js'
import {
  FINGERPRINT_BYTES, MAX_DRAFT_TOKENS, MAX_ERROR_MESSAGE_BYTES, MAX_FRAME_ENTRIES, MAX_REQUEST_BYTES, MAX_REQUEST_TOKENS,
  MAX_RESPONSE_BYTES, Status, VOCAB_SIZE
} from './types.js'
import type { ErrorResponse, Frame, FrameResponse, InferRequest, OpenInfo, OpenResponse } from './types.js'
import { checkWireTypes, forEachField, PbWriter, readVarint, varintLength, writeVarint } from './varint.js'
import type { Uint8ArrayList } from 'uint8arraylist'

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const utf8Encoder = new TextEncoder()
/** highest status byte defined by this version */
const MAX_STATUS = Status.SHUTTING_DOWN

// ---------------------------------------------------------------- requests

function packedTokens (tokens: Uint32Array): Uint8Array {
  checkTokens(tokens)
  let len = 0
  for (const t of tokens) len += varintLength(t)
  const out = new Uint8Array(len)
  for (let i = 0, pos = 0; i < tokens.length; i++) pos = writeVarint(out, pos, tokens[i])
  return out
}

function checkTokens (tokens: ArrayLike<number>): void {
  if (tokens.length === 0) throw new MalformedMessageError('no tokens')
  if (tokens.length > MAX_REQUEST_TOKENS) throw new OversizedMessageError(`${tokens.length} tokens > ${MAX_REQUEST_TOKENS}`)
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] >= VOCAB_SIZE) throw new MalformedMessageError(`token ${tokens[i]} outside the vocabulary`)
  }
}

function checkUint32 (name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new MalformedMessageError(`${name} ${v} is not a uint32`)
}

/** an optional `target` token: written whenever present (token 0 included: the field has presence) */
function writeTarget (w: PbWriter, no: number, target: number | undefined): void {
  if (target === undefined) return
  if (!Number.isInteger(target) || target < 0 || target >= VOCAB_SIZE) throw new MalformedMessageError(`target ${target} outside the vocabulary`)
  w.varint(no << 3).varint(target)
}

function readTarget (g: { no: number, wire: number, value: number }): number {
  const t = scalar(g)
  if (t >= VOCAB_SIZE) throw new MalformedMessageError(`target ${t} outside the vocabulary`)
  return t
}

/** InferRequest → protobuf bytes (tokens packed). Throws what decodeRequest would. */
export function encodeRequest (req: InferRequest): Uint8Array {
  const out = new PbWriter()
  switch (req.type) {
    case 'open': {
      checkUint32('protocolVersion', req.protocolVersion)
      if (req.tokenizerFingerprint.byteLength !== FINGERPRINT_BYTES) throw new MalformedMessageError('fingerprint must be 32 bytes')
      if (!Number.isInteger(req.topK) || req.topK < 0 || req.topK > MAX_FRAME_ENTRIES) throw new MalformedMessageError(`top_k ${req.topK} outside 0..256`)
      const open = new PbWriter()
        .uint(1, req.protocolVersion)
        .bytes(2, req.tokenizerFingerprint)
        .bytes(3, packedTokens(req.tokens))
        .uint(4, req.topK)
      if (req.draft != null && req.draft.length > 0) {
        if (req.draft.length > MAX_DRAFT_TOKENS) throw new MalformedMessageError(`draft of ${req.draft.length} tokens > ${MAX_DRAFT_TOKENS}`)
        open.bytes(5, packedTokens(req.draft))
      }
      writeTarget(open, 6, req.target)
      if (req.scorePrompt === true) open.uint(7, 1)
      if (req.compactFrames === true) open.uint(8, 1)
      out.bytes(1, open.finish())
      break
    }
    case 'step': {
      const step = new PbWriter().bytes(1, packedTokens(req.tokens))
      if (req.draft != null && req.draft.length > 0) {
        if (req.draft.length > MAX_DRAFT_TOKENS) throw new MalformedMessageError(`draft of ${req.draft.length} tokens > ${MAX_DRAFT_TOKENS}`)
        step.bytes(2, packedTokens(req.draft))
      }
      if (req.rollback != null && req.rollback !== 0) { checkUint32('rollback', req.rollback); step.uint(3, req.rollback) }
      writeTarget(step, 4, req.target)
      out.bytes(2, step.finish())
      break
    }
    case 'close':
      out.bytes(3, new Uint8Array(0))
      break
    default:
      throw new MalformedMessageError(`unknown request type ${(req as { type: unknown }).type}`)
  }
  if (out.size > MAX_REQUEST_BYTES) throw new OversizedMessageError(`request of ${out.size} bytes > ${MAX_REQUEST_BYTES}`)
  return out.finish()
}

function walk (buf: Uint8Array, start: number, end: number, what: string, fn: Parameters<typeof forEachField>[3]): void {
  const err = forEachField(buf, start, end, fn)
  if (err != null) throw new MalformedMessageError(`${what}: ${err}`)
}

/** appends the tokens of one `tokens` field occurrence (packed: wire type 2, or unpacked: 0) */
function readTokens (buf: Uint8Array, f: { wire: number, value: number, start: number, end: number }, into: number[]): void {
  const push = (t: number): void => {
    if (t < 0 || t >= VOCAB_SIZE) throw new MalformedMessageError(`token ${t} outside the vocabulary`)
    if (into.length === MAX_REQUEST_TOKENS) throw new OversizedMessageError(`more than ${MAX_REQUEST_TOKENS} tokens`)
    into.push(t)
  }
  if (f.wire === 0) return push(f.value)
  if (f.wire !== 2) throw new MalformedMessageError(`tokens: wire type ${f.wire}`)
  for (let pos = f.start; pos < f.end;) {
    const r = readVarint(buf, pos, f.end)
    if (typeof r === 'string') throw new MalformedMessageError(`tokens: ${r}`)
    push(r.value)
    pos = r.pos
  }
}

/** a known scalar field must have the expected wire type and fit in 32 bits */
function scalar (f: { no: number, wire: number, value: number }): number {
  if (f.wire !== 0 || f.value < 0) throw new MalformedMessageError(`field ${f.no}: not a uint32`)
  return f.value
}

/**
 * protobuf bytes → InferRequest. Exactly one of open/step/close; unknown fields are skipped.
 * Open: fingerprint of 32 bytes, ≥ 1 token, top_k 0..256 (0 decodes as 256).
 * Step: ≥ 1 token. Every token < VOCAB_SIZE. Throws MalformedMessageError / OversizedMessageError.
 */
export function decodeRequest (bytes: Uint8Array | Uint8ArrayList): InferRequest {
  const buf = bytes.subarray()
  if (buf.byteLength > MAX_REQUEST_BYTES) throw new OversizedMessageError(`request of ${buf.byteLength} bytes > ${MAX_REQUEST_BYTES}`)
  let req: InferRequest | undefined
  let seen = 0
  walk(buf, 0, buf.byteLength, 'request', f => {
    if (f.no < 1 || f.no > 3) return
    if (f.wire !== 2) throw new MalformedMessageError(`request field ${f.no}: wire type ${f.wire}`)
    if (++seen > 1) throw new MalformedMessageError('more than one of open/step/close')
    const tokens: number[] = []
    if (f.no === 1) {
      let protocolVersion = 0
      let fingerprint: Uint8Array = new Uint8Array(0)
      let topK = 0
      let target: number | undefined
      let scorePrompt = false
      let compactFrames = false
      const draft: number[] = []
      walk(buf, f.start, f.end, 'open', g => {
        if (g.no === 1) protocolVersion = scalar(g)
        else if (g.no === 2) {
          if (g.wire !== 2) throw new MalformedMessageError('open.tokenizer_fingerprint: not bytes')
          fingerprint = buf.slice(g.start, g.end)
        } else if (g.no === 3) readTokens(buf, g, tokens)
        else if (g.no === 4) topK = scalar(g)
        else if (g.no === 5) readTokens(buf, g, draft)
        else if (g.no === 6) target = readTarget(g)
        else if (g.no === 7) scorePrompt = scalar(g) !== 0
        else if (g.no === 8) compactFrames = scalar(g) !== 0
      })
      if (draft.length > MAX_DRAFT_TOKENS) throw new MalformedMessageError(`open: draft of ${draft.length} tokens > ${MAX_DRAFT_TOKENS}`)
      if (fingerprint.byteLength !== FINGERPRINT_BYTES) throw new MalformedMessageError('open: fingerprint must be 32 bytes')
      if (topK > MAX_FRAME_ENTRIES) throw new MalformedMessageError(`open: top_k ${topK} > ${MAX_FRAME_ENTRIES}`)
      if (tokens.length === 0) throw new MalformedMessageError('open: no tokens')
      req = { type: 'open', protocolVersion, tokenizerFingerprint: fingerprint, tokens: Uint32Array.from(tokens), topK: topK === 0 ? MAX_FRAME_ENTRIES : topK }
      if (draft.length > 0) req.draft = Uint32Array.from(draft)
      if (target !== undefined) req.target = target
      if (scorePrompt) req.scorePrompt = true
      if (compactFrames) req.compactFrames = true
    } else if (f.no === 2) {
      const draft: number[] = []
      let rollback = 0
      let target: number | undefined
      walk(buf, f.start, f.end, 'step', g => {
        if (g.no === 1) readTokens(buf, g, tokens)
        else if (g.no === 2) readTokens(buf, g, draft)
        else if (g.no === 3) rollback = scalar(g)
        else if (g.no === 4) target = readTarget(g)
      })
      if (tokens.length === 0) throw new MalformedMessageError('step: no tokens')
      if (draft.length > MAX_DRAFT_TOKENS) throw new MalformedMessageError(`step: draft of ${draft.length} tokens > ${MAX_DRAFT_TOKENS}`)
      req = { type: 'step', tokens: Uint32Array.from(tokens) }
      if (draft.length > 0) req.draft = Uint32Array.from(draft)
      if (rollback > 0) req.rollback = rollback
      if (target !== undefined) req.target = target
    } else {
      walk(buf, f.start, f.end, 'close', () => {}) // must still be well-formed
      req = { type: 'close' }
    }
  })
  if (req == null) throw new MalformedMessageError('none of open/step/close set')
  return req
}

// ---------------------------------------------------------------- responses

/** wire types of OpenInfo's fields: frame message, model_name string, two uint32, prompt_logprob double, prompt_scored uint32 */
const OPEN_INFO_WIRE_TYPES = { 1: 2, 2: 2, 3: 0, 4: 0, 5: 1, 6: 0 } as const

function withStatus (status: Status, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + payload.byteLength)
  out[0] = status
  out.set(payload, 1)
  if (out.byteLength > MAX_RESPONSE_BYTES) throw new OversizedMessageError(`response of ${out.byteLength} bytes > ${MAX_RESPONSE_BYTES}`)
  return out
}

/** OK + Frame: the response to a Step, its logprobs in `encoding` (default 'full'). Throws InvalidFrameError / OversizedMessageError. */
export function encodeFrameResponse (frame: Frame, encoding: FrameEncoding = 'full'): Uint8Array {
  return withStatus(Status.OK, PbFrame.encode(frameToPb(frame, VOCAB_SIZE, encoding)))
}

/** OK + OpenInfo: the response to an Open, its frame's logprobs in `encoding` (default 'full'). */
export function encodeOpenResponse (info: OpenInfo, encoding: FrameEncoding = 'full'): Uint8Array {
  checkUint32('contextLength', info.contextLength)
  checkUint32('freeSlots', info.freeSlots)
  const pb: PbOpenInfo = {
    frame: frameToPb(info.frame, VOCAB_SIZE, encoding),
    modelName: info.modelName,
    contextLength: info.contextLength,
    freeSlots: info.freeSlots
  }
  if (info.promptLogprob !== undefined || info.promptScored !== undefined) {
    // both or neither: a sum without its count cannot be turned into a per-token figure
    if (info.promptLogprob === undefined || info.promptScored === undefined) throw new MalformedMessageError('promptLogprob and promptScored go together')
    if (!Number.isFinite(info.promptLogprob) || info.promptLogprob > 1e-3) throw new MalformedMessageError(`promptLogprob ${info.promptLogprob} is not a finite number ≤ 0`)
    checkUint32('promptScored', info.promptScored)
    pb.promptLogprob = info.promptLogprob > 0 ? 0 : info.promptLogprob
    pb.promptScored = info.promptScored
  }
  return withStatus(Status.OK, PbOpenInfo.encode(pb))
}

/** any status but OK + its message, cut to 256 bytes on a UTF-8 character boundary */
export function encodeErrorResponse (status: Exclude<Status, Status.OK>, message: string): Uint8Array {
  if (!Number.isInteger(status) || status <= Status.OK || status > MAX_STATUS) {
    throw new MalformedMessageError(`status ${status} cannot carry an error message`)
  }
  let text = utf8Encoder.encode(message)
  if (text.byteLength > MAX_ERROR_MESSAGE_BYTES) {
    let cut = MAX_ERROR_MESSAGE_BYTES
    while (cut > 0 && (text[cut] & 0xc0) === 0x80) cut-- // never split a multi-byte character
    text = text.subarray(0, cut)
  }
  return withStatus(status, text)
}

/** separates a HALTED response's message from the HALT envelope: never a byte of UTF-8 */
const HALT_ENVELOPE_MARK = 0xff

/**
 * HALTED + message + the signed HALT envelope the expert holds (protocols/infer.md §3): the
 * message, then the byte 0xFF (which never occurs in UTF-8), then the envelope bytes. The
 * envelope is omitted (a plain HALTED response) when there is none or when it does not fit the
 * 4 096-byte response limit. The envelope is not checked here: only the receiver's governance
 * can verify it.
 */
export function encodeHaltedResponse (message: string, envelope?: Uint8Array): Uint8Array {
  const plain = encodeErrorResponse(Status.HALTED, message)
  if (envelope == null || envelope.byteLength === 0 || plain.byteLength + 1 + envelope.byteLength > MAX_RESPONSE_BYTES) return plain
  const out = new Uint8Array(plain.byteLength + 1 + envelope.byteLength)
  out.set(plain, 0)
  out[plain.byteLength] = HALT_ENVELOPE_MARK
  out.set(envelope, plain.byteLength + 1)
  return out
}

/** size check + status byte; returns the status and the payload, or the decoded error response */
function splitResponse (bytes: Uint8Array | Uint8ArrayList): { payload: Uint8Array } | ErrorResponse {
  const buf = bytes.subarray()
  if (buf.byteLength > MAX_RESPONSE_BYTES) throw new OversizedMessageError(`response of ${buf.byteLength} bytes > ${MAX_RESPONSE_BYTES}`)
  if (buf.byteLength === 0) throw new MalformedMessageError('empty response')
  const status = buf[0]
  if (status > MAX_STATUS) throw new MalformedMessageError(`unknown status ${status}`)
  let payload = buf.subarray(1)
  if (status === Status.OK) return { payload }
  let haltEnvelope: Uint8Array | undefined
  if (status === Status.HALTED) {
    const mark = payload.indexOf(HALT_ENVELOPE_MARK)
    if (mark >= 0) {
      haltEnvelope = payload.slice(mark + 1)
      if (haltEnvelope.byteLength === 0) throw new MalformedMessageError('HALTED: empty halt envelope after the 0xff mark')
      payload = payload.subarray(0, mark)
    }
  }
  if (payload.byteLength > MAX_ERROR_MESSAGE_BYTES) throw new MalformedMessageError(`error message of ${payload.byteLength} bytes > ${MAX_ERROR_MESSAGE_BYTES}`)
  const message = rethrowAs(() => new MalformedMessageError('error message is not UTF-8'), () => utf8Decoder.decode(payload))
  return haltEnvelope != null ? { status: status as ErrorResponse['status'], message, haltEnvelope } : { status: status as ErrorResponse['status'], message }
}

/** response to a Step → OK + Frame, or the error status and message */
export function decodeFrameResponse (bytes: Uint8Array | Uint8ArrayList, vocabSize: number = VOCAB_SIZE): FrameResponse {
  const r = splitResponse(bytes)
  if (!('payload' in r)) return r
  return { status: Status.OK, frame: decodeFrame(r.payload, vocabSize) }
}

/** response to an Open → OK + OpenInfo, or the error status and message */
export function decodeOpenResponse (bytes: Uint8Array | Uint8ArrayList, vocabSize: number = VOCAB_SIZE): OpenResponse {
  const r = splitResponse(bytes)
  if (!('payload' in r)) return r
  const buf = r.payload
  let frameAt: [number, number] | undefined
  const bad = forEachField(buf, 0, buf.byteLength, f => { if (f.no === 1 && f.wire === 2) frameAt = [f.start, f.end] }) ??
    checkWireTypes(buf, 0, buf.byteLength, OPEN_INFO_WIRE_TYPES) ??
    (frameAt == null ? 'no frame' : checkWireTypes(buf, frameAt[0], frameAt[1], FRAME_WIRE_TYPES))
  if (bad != null) throw new MalformedMessageError(`open info: ${bad}`)
  const pb = rethrowAs(m => new MalformedMessageError(`open info: ${m}`), () => PbOpenInfo.decode(buf))
  if (pb.frame == null) throw new MalformedMessageError('open info without a frame')
  const open: OpenInfo = { frame: frameFromPb(pb.frame, vocabSize), modelName: pb.modelName, contextLength: pb.contextLength, freeSlots: pb.freeSlots }
  if (pb.promptLogprob !== undefined && pb.promptScored !== undefined) {
    if (!Number.isFinite(pb.promptLogprob) || pb.promptLogprob > 0) throw new MalformedMessageError(`open info: prompt_logprob ${pb.promptLogprob} is not a finite number ≤ 0`)
    open.promptLogprob = pb.promptLogprob === 0 ? 0 : pb.promptLogprob
    open.promptScored = pb.promptScored
  }
  return { status: Status.OK, open }
}
