/**
 * Frame codec (protocols/infer.md, "Frame"): a sparse next-token distribution as
 *   ids       — ascending token ids, delta-coded unsigned LEB128 (first id as is, then differences)
 *   logprobs  — uint16 little-endian per entry, q = round(-logprob * LOGPROB_SCALE) clamped to 0..65535
 *   tail_mass — float32 probability of every unlisted token, in [0, 1]
 *   target_logprob — optional float32 (teacher forcing): exact logprob of the requested target, finite, ≤ 0
 */
import { Frame as PbFrame } from './pb/infer.js'
import { InvalidFrameError, MalformedMessageError, rethrowAs } from './errors.js'
import { LOGPROB_SCALE, MAX_FRAME_ENTRIES, MAX_LOGPROB_Q, VOCAB_SIZE, type Frame } from './types.js'
import { checkWireTypes, readVarint, varintLength, writeVarint } from './varint.js'
import type { Uint8ArrayList } from 'uint8arraylist'

/** logprobs up to this much above 0 are float error and clamp to 0 */
const LOGPROB_EPSILON = 1e-3
/** tail masses this far outside [0, 1] are float error and clamp into it */
const TAIL_EPSILON = 1e-6

/** q = round(-logprob * 1024) clamped to 0..65535; InvalidFrameError for NaN, ±Infinity or logprob > 1e-3 */
export function quantizeLogprob (logprob: number): number {
  if (!Number.isFinite(logprob) || logprob > LOGPROB_EPSILON) {
    throw new InvalidFrameError(`logprob ${logprob} is not a finite number ≤ 0`)
  }
  const q = Math.round(-logprob * LOGPROB_SCALE)
  return q < 0 ? 0 : q > MAX_LOGPROB_Q ? MAX_LOGPROB_Q : q
}

/** the logprob a quantised value stands for: -q / 1024 (never -0) */
export function dequantizeLogprob (q: number): number {
  return q === 0 ? 0 : -q / LOGPROB_SCALE
}

/** validates `frame` and builds the protobuf fields (entries sorted by id) */
export function frameToPb (frame: Frame, vocabSize: number = VOCAB_SIZE): PbFrame {
  const { position, ids, logprobs } = frame
  if (!Number.isInteger(position) || position < 0 || position > 0xffffffff) {
    throw new InvalidFrameError(`position ${position} is not a uint32`)
  }
  const n = ids.length
  if (logprobs.length !== n) throw new InvalidFrameError(`${n} ids but ${logprobs.length} logprobs`)
  if (n > MAX_FRAME_ENTRIES) throw new InvalidFrameError(`${n} entries > ${MAX_FRAME_ENTRIES}`)

  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => ids[a] - ids[b])
  let idBytes = 0
  for (let k = 0; k < n; k++) {
    const id = ids[order[k]]
    const prev = k === 0 ? 0 : ids[order[k - 1]]
    if (k > 0 && id === prev) throw new InvalidFrameError(`duplicate id ${id}`)
    if (id >= vocabSize) throw new InvalidFrameError(`id ${id} outside the vocabulary (${vocabSize})`)
    idBytes += varintLength(id - prev)
  }
  const idsOut = new Uint8Array(idBytes)
  const lpOut = new Uint8Array(2 * n)
  for (let k = 0, pos = 0; k < n; k++) {
    const i = order[k]
    pos = writeVarint(idsOut, pos, ids[i] - (k === 0 ? 0 : ids[order[k - 1]]))
    const q = quantizeLogprob(logprobs[i])
    lpOut[2 * k] = q & 0xff
    lpOut[2 * k + 1] = q >>> 8
  }
  const pb: PbFrame = { position, ids: idsOut, logprobs: lpOut, tailMass: checkTailMass(frame.tailMass) }
  if (frame.targetLogprob !== undefined) pb.targetLogprob = checkTargetLogprob(frame.targetLogprob)
  return pb
}

/**
 * An encoder's check of Frame.target_logprob: NaN, ±∞, values above 1e-3 or below the
 * float32 range are rejected; (0, 1e-3] is float error and becomes 0; rounded to float32.
 */
export function checkTargetLogprob (lp: number): number {
  if (!Number.isFinite(lp) || lp > LOGPROB_EPSILON) throw new InvalidFrameError(`target logprob ${lp} is not a finite number ≤ 0`)
  const f = Math.fround(lp > 0 ? 0 : lp)
  if (!Number.isFinite(f)) throw new InvalidFrameError(`target logprob ${lp} is outside the float32 range`)
  return f === 0 ? 0 : f
}

/** clamps float error of ±1e-6 into [0, 1] and rounds to float32; InvalidFrameError otherwise */
function checkTailMass (t: number): number {
  if (!(t >= -TAIL_EPSILON && t <= 1 + TAIL_EPSILON)) { // also catches NaN
    throw new InvalidFrameError(`tail mass ${t} outside [0, 1]`)
  }
  return Math.fround(t < 0 ? 0 : t > 1 ? 1 : t)
}

/** validates decoded protobuf fields and expands them to a Frame (ids ascending) */
export function frameFromPb (pb: PbFrame, vocabSize: number = VOCAB_SIZE): Frame {
  const idBuf = pb.ids
  const lpBuf = pb.logprobs
  if (lpBuf.byteLength % 2 !== 0) throw new InvalidFrameError('odd logprobs length')
  const n = lpBuf.byteLength / 2
  if (n > MAX_FRAME_ENTRIES) throw new InvalidFrameError(`${n} entries > ${MAX_FRAME_ENTRIES}`)

  const ids = new Uint32Array(n)
  let count = 0
  let id = 0
  for (let pos = 0; pos < idBuf.byteLength;) {
    const r = readVarint(idBuf, pos, idBuf.byteLength)
    if (typeof r === 'string') throw new InvalidFrameError(`ids: ${r}`)
    if (count === n) throw new InvalidFrameError(`more ids than the ${n} logprobs`)
    if (count > 0 && r.value === 0) throw new InvalidFrameError('ids: duplicate id (zero delta)')
    id += r.value
    if (id >= vocabSize) throw new InvalidFrameError(`id ${id} outside the vocabulary (${vocabSize})`)
    ids[count++] = id
    pos = r.pos
  }
  if (count !== n) throw new InvalidFrameError(`${count} ids but ${n} logprobs`)

  const logprobs = new Float32Array(n)
  for (let i = 0; i < n; i++) logprobs[i] = dequantizeLogprob(lpBuf[2 * i] | (lpBuf[2 * i + 1] << 8))

  const tailMass = pb.tailMass
  if (!Number.isFinite(tailMass) || tailMass < 0 || tailMass > 1) {
    throw new InvalidFrameError(`tail mass ${tailMass} outside [0, 1]`)
  }
  const frame: Frame = { position: pb.position, ids, logprobs, tailMass }
  if (pb.targetLogprob !== undefined) {
    const t = pb.targetLogprob
    if (!Number.isFinite(t) || t > 0) throw new InvalidFrameError(`target logprob ${t} is not a finite number ≤ 0`)
    frame.targetLogprob = t === 0 ? 0 : t
  }
  return frame
}

/** Frame → protobuf bytes; entries may come in any order. Throws InvalidFrameError. */
export function encodeFrame (frame: Frame, vocabSize: number = VOCAB_SIZE): Uint8Array {
  return PbFrame.encode(frameToPb(frame, vocabSize))
}

/** protobuf bytes → Frame. Throws MalformedMessageError (not protobuf) or InvalidFrameError. */
export function decodeFrame (bytes: Uint8Array | Uint8ArrayList, vocabSize: number = VOCAB_SIZE): Frame {
  const buf = bytes.subarray()
  const bad = checkWireTypes(buf, 0, buf.byteLength, FRAME_WIRE_TYPES)
  if (bad != null) throw new MalformedMessageError(`frame: ${bad}`)
  const pb = rethrowAs(m => new MalformedMessageError(`frame: ${m}`), () => PbFrame.decode(buf))
  return frameFromPb(pb, vocabSize)
}

/** wire types of Frame's fields: position varint, ids bytes, logprobs bytes, tail_mass and target_logprob fixed32 */
export const FRAME_WIRE_TYPES = { 1: 0, 2: 2, 3: 2, 4: 5, 5: 5 } as const
