/**
 * Frame codec (protocols/infer.md, "Frame"): a sparse next-token distribution as
 *   ids       — ascending token ids, delta-coded unsigned LEB128 (first id as is, then differences)
 *   logprobs  — uint16 little-endian per entry, q = round(-logprob * LOGPROB_SCALE) clamped to 0..65535
 *   or, compact (a router that asked for it in its Open):
 *   logprobs_u8   — one byte per entry, q8 = round(-logprob / step) clamped to 0..255
 *   logprob_floor — the deepest entry's uint16 q; step = logprob_floor / (LOGPROB_SCALE · 255)
 *   tail_mass — float32 probability of every unlisted token, in [0, 1]
 *   target_logprob — optional float32 (teacher forcing): exact logprob of the requested target, finite, ≤ 0
 */
import { Frame as PbFrame } from './pb/infer.js'
import { InvalidFrameError, MalformedMessageError, rethrowAs } from './errors.js'
import { COMPACT_LEVELS, LOGPROB_SCALE, MAX_FRAME_ENTRIES, MAX_LOGPROB_Q, VOCAB_SIZE, type Frame } from './types.js'
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

/**
 * a compact frame's logprob: -q8 · floor / (1024 · 255) (never -0). Exact for the deepest entry
 * (q8 = 255: -floor / 1024, its uint16 value), so decoding and encoding again gives the same bytes.
 */
export function dequantizeCompact (q8: number, floor: number): number {
  return q8 === 0 || floor === 0 ? 0 : -(q8 * floor) / (LOGPROB_SCALE * COMPACT_LEVELS)
}

/** how frames are written: 'full' (uint16 logprobs, 1/1024 nat) or 'compact' (one byte each, a per-frame step) */
export type FrameEncoding = 'full' | 'compact'

/** validates `frame` and builds the protobuf fields (entries sorted by id); `encoding` of the logprobs (default 'full') */
export function frameToPb (frame: Frame, vocabSize: number = VOCAB_SIZE, encoding: FrameEncoding = 'full'): PbFrame {
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
  const qs = new Uint16Array(n)
  for (let k = 0, pos = 0; k < n; k++) {
    const i = order[k]
    pos = writeVarint(idsOut, pos, ids[i] - (k === 0 ? 0 : ids[order[k - 1]]))
    qs[k] = quantizeLogprob(logprobs[i])
  }
  const pb: PbFrame = { position, ids: idsOut, logprobs: new Uint8Array(0), tailMass: checkTailMass(frame.tailMass), logprobsU8: new Uint8Array(0), logprobFloor: 0 }
  if (encoding === 'compact' && n > 0) {
    // the step is set by the deepest entry's uint16 value, which maps to 255 exactly
    let floor = 0
    for (let k = 0; k < n; k++) if (qs[k] > floor) floor = qs[k]
    const out = new Uint8Array(n)
    if (floor > 0) {
      for (let k = 0; k < n; k++) {
        // the deepest entries take 255: they decode to their uint16 value exactly
        if (qs[k] === floor) { out[k] = COMPACT_LEVELS; continue }
        const q8 = Math.round(Math.max(0, -logprobs[order[k]]) * LOGPROB_SCALE * COMPACT_LEVELS / floor)
        out[k] = q8 > COMPACT_LEVELS ? COMPACT_LEVELS : q8
      }
      // a most likely entry stays the most likely (greedy decoding reads the argmax): when its
      // logprob is strictly above every other, its q8 is strictly below theirs
      let top = 0
      let second = -1
      for (let k = 1; k < n; k++) {
        const lp = logprobs[order[k]]
        if (lp > logprobs[order[top]]) { second = top; top = k } else if (second < 0 || lp > logprobs[order[second]]) second = k
      }
      if (second >= 0 && logprobs[order[top]] > logprobs[order[second]]) {
        let m = COMPACT_LEVELS
        for (let k = 0; k < n; k++) if (k !== top && out[k] < m) m = out[k]
        if (out[top] >= m) {
          if (m > 0) out[top] = m - 1
          else for (let k = 0; k < n; k++) if (k !== top && out[k] === 0) out[k] = 1 // (not a distribution: two entries near 1)
        }
      }
    }
    pb.logprobsU8 = out
    pb.logprobFloor = floor
  } else {
    const lpOut = new Uint8Array(2 * n)
    for (let k = 0; k < n; k++) {
      lpOut[2 * k] = qs[k] & 0xff
      lpOut[2 * k + 1] = qs[k] >>> 8
    }
    pb.logprobs = lpOut
  }
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
  const u8 = pb.logprobsU8 ?? new Uint8Array(0)
  const floor = pb.logprobFloor ?? 0
  const compact = u8.byteLength > 0
  if (compact && lpBuf.byteLength > 0) throw new InvalidFrameError('both logprobs and logprobs_u8')
  if (!compact && floor !== 0) throw new InvalidFrameError('logprob_floor without logprobs_u8')
  if (floor > MAX_LOGPROB_Q) throw new InvalidFrameError(`logprob_floor ${floor} > ${MAX_LOGPROB_Q}`)
  if (lpBuf.byteLength % 2 !== 0) throw new InvalidFrameError('odd logprobs length')
  const n = compact ? u8.byteLength : lpBuf.byteLength / 2
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
  if (compact) {
    if (floor === 0 && u8.some(q => q !== 0)) throw new InvalidFrameError('logprobs_u8 entries below 0 with a logprob_floor of 0')
    for (let i = 0; i < n; i++) logprobs[i] = dequantizeCompact(u8[i], floor)
  } else {
    for (let i = 0; i < n; i++) logprobs[i] = dequantizeLogprob(lpBuf[2 * i] | (lpBuf[2 * i + 1] << 8))
  }

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
export function encodeFrame (frame: Frame, vocabSize: number = VOCAB_SIZE, encoding: FrameEncoding = 'full'): Uint8Array {
  return PbFrame.encode(frameToPb(frame, vocabSize, encoding))
}

/** protobuf bytes → Frame. Throws MalformedMessageError (not protobuf) or InvalidFrameError. */
export function decodeFrame (bytes: Uint8Array | Uint8ArrayList, vocabSize: number = VOCAB_SIZE): Frame {
  const buf = bytes.subarray()
  const bad = checkWireTypes(buf, 0, buf.byteLength, FRAME_WIRE_TYPES)
  if (bad != null) throw new MalformedMessageError(`frame: ${bad}`)
  const pb = rethrowAs(m => new MalformedMessageError(`frame: ${m}`), () => PbFrame.decode(buf))
  return frameFromPb(pb, vocabSize)
}

/** wire types of Frame's fields: position varint, ids bytes, logprobs bytes, tail_mass and target_logprob fixed32, logprobs_u8 bytes, logprob_floor varint */
export const FRAME_WIRE_TYPES = { 1: 0, 2: 2, 3: 2, 4: 5, 5: 5, 6: 2, 7: 0 } as const
