/**
 * Unsigned LEB128 varints limited to 32 bits, as used inside frames and requests.
 * Decoding is strict: at most 5 bytes, value < 2^32, no overlong (zero-padded) forms,
 * so every value has exactly one encoding.
 */

/** bytes needed for `value` (0 ≤ value < 2^32) */
export function varintLength (value: number): number {
  let n = 1
  while (value >= 0x80) { value = Math.floor(value / 128); n++ }
  return n
}

/** writes `value` at `buf[pos]`, returns the position after it */
export function writeVarint (buf: Uint8Array, pos: number, value: number): number {
  while (value >= 0x80) {
    buf[pos++] = (value & 0x7f) | 0x80
    value = Math.floor(value / 128)
  }
  buf[pos++] = value
  return pos
}

/** result of readVarint: the value and the position after it */
export interface VarintRead { value: number, pos: number }

/**
 * Reads one varint at `buf[pos]` (`end` exclusive). Returns a short reason string
 * instead of throwing, so each caller can raise its own named error.
 */
export function readVarint (buf: Uint8Array, pos: number, end: number): VarintRead | string {
  let value = 0
  for (let i = 0; i < 5; i++) {
    if (pos >= end) return 'truncated varint'
    const b = buf[pos++]
    value += (b & 0x7f) * 2 ** (7 * i)
    if (b < 0x80) {
      if (b === 0 && i > 0) return 'overlong varint'
      if (value > 0xffffffff) return 'varint overflow'
      return { value, pos }
    }
  }
  return 'varint overflow'
}

/** one protobuf field as seen by forEachField */
export interface PbField {
  /** field number */
  no: number
  /** wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  wire: number
  /** wire type 0: the value, or -1 when it does not fit in 32 bits */
  value: number
  /** wire type 2: the payload is buf[start, end) */
  start: number
  end: number
}

/**
 * Minimal strict protobuf walker for hand-written codecs: calls `fn` for every field of the
 * message in buf[start, end). Returns a reason string on malformed input (truncation, group
 * wire types, varints over 10 bytes), undefined on success.
 */
export function forEachField (buf: Uint8Array, start: number, end: number, fn: (f: PbField) => void): string | undefined {
  const f: PbField = { no: 0, wire: 0, value: 0, start: 0, end: 0 }
  let pos = start
  while (pos < end) {
    const tag = readVarint(buf, pos, end)
    if (typeof tag === 'string') return `tag: ${tag}`
    pos = tag.pos
    f.no = tag.value >>> 3
    f.wire = tag.value & 7
    if (f.no === 0) return 'field number 0'
    switch (f.wire) {
      case 0: { // up to 10 bytes (uint64 of an unknown field); -1 when over 32 bits; no overlong forms
        let i = 0
        let value = 0
        for (; i < 10; i++) {
          if (pos >= end) return 'truncated varint'
          const b = buf[pos++]
          value += (b & 0x7f) * 2 ** (7 * i)
          if (b < 0x80) break
        }
        if (i > 0 && i < 10 && buf[pos - 1] === 0) return 'overlong varint'
        if (i === 10) return 'varint longer than 10 bytes'
        f.value = value > 0xffffffff ? -1 : value
        break
      }
      case 1: pos += 8; break
      case 5: pos += 4; break
      case 2: {
        const len = readVarint(buf, pos, end)
        if (typeof len === 'string') return `length: ${len}`
        f.start = len.pos
        f.end = pos = len.pos + len.value
        break
      }
      default: return `unsupported wire type ${f.wire}`
    }
    if (pos > end) return 'truncated field'
    fn(f)
  }
  return undefined
}

/**
 * Checks that every known field of the message in buf[start, end) has its schema wire type
 * (`wireTypes[fieldNo]`), on top of forEachField's checks: protons' generated decoders ignore
 * the wire type of known fields. Returns a reason string, undefined when fine.
 */
export function checkWireTypes (buf: Uint8Array, start: number, end: number, wireTypes: Readonly<Record<number, number>>): string | undefined {
  let bad: string | undefined
  const err = forEachField(buf, start, end, f => {
    const want = wireTypes[f.no]
    if (want != null && f.wire !== want && bad == null) bad = `field ${f.no}: wire type ${f.wire}, expected ${want}`
    if (want === 0 && f.value < 0 && bad == null) bad = `field ${f.no}: value over 32 bits`
  })
  return err ?? bad
}

/**
 * Minimal protobuf writer for hand-written encoders (fields must be written in field-number
 * order; default values are omitted, as proto3 encoders do).
 */
export class PbWriter {
  private readonly chunks: Uint8Array[] = []
  size = 0

  raw (bytes: Uint8Array): this { this.chunks.push(bytes); this.size += bytes.byteLength; return this }
  /** a bare varint, 0 ≤ v ≤ 2^53 - 1 */
  varint (v: number): this { const b = new Uint8Array(varintLength(v)); writeVarint(b, 0, v); return this.raw(b) }
  /** length-delimited field (bytes, string, message, packed); always written, even when empty */
  bytes (no: number, payload: Uint8Array): this { return this.varint(no << 3 | 2).varint(payload.byteLength).raw(payload) }
  /** bytes/string field, omitted when empty */
  optBytes (no: number, payload: Uint8Array): this { return payload.byteLength === 0 ? this : this.bytes(no, payload) }
  string (no: number, s: string): this { return this.optBytes(no, new TextEncoder().encode(s)) }
  /** uint32/uint64 field from a safe non-negative integer, omitted when 0 */
  uint (no: number, v: number): this { return v === 0 ? this : this.varint(no << 3).varint(v) }
  /** float (fixed32) field, omitted when 0 */
  float (no: number, v: number): this {
    if (v === 0) return this
    const b = new Uint8Array(4)
    new DataView(b.buffer).setFloat32(0, v, true)
    return this.varint(no << 3 | 5).raw(b)
  }

  finish (): Uint8Array {
    const out = new Uint8Array(this.size)
    let pos = 0
    for (const c of this.chunks) { out.set(c, pos); pos += c.byteLength }
    return out
  }
}
