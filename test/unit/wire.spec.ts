/* Wire layer of /meshllm/infer/1.0.0: frames, requests, responses, test vectors, fuzzing. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { Uint8ArrayList } from 'uint8arraylist'
import {
  decodeFrame, decodeFrameResponse, decodeOpenResponse, decodeRequest, dequantizeCompact, dequantizeLogprob, encodeErrorResponse,
  encodeFrame, encodeFrameResponse, encodeHaltedResponse, encodeOpenResponse, encodeRequest, isWireError, quantizeLogprob,
  LOGPROB_SCALE, MAX_FRAME_ENTRIES, MAX_REQUEST_BYTES, MAX_REQUEST_TOKENS, MAX_RESPONSE_BYTES, Status, VOCAB_SIZE
} from '../../src/wire/index.js'
import type { Frame, InferRequest, OpenInfo } from '../../src/wire/index.js'
import { mutated, runs } from '../helpers/fuzz.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const unhex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h, 'hex'))
const HALF_STEP = 1 / (2 * LOGPROB_SCALE) // 1/2048 nat: the largest quantisation error
const MAX_LOGPROB = -65535 / LOGPROB_SCALE // most negative representable logprob

/** asserts that fn throws an error named `name` */
function throwsNamed (fn: () => unknown, name: string): void {
  assert.throws(fn, (err: any) => {
    assert.equal(err?.name, name, `expected ${name}, got ${err?.name}: ${err?.message}`)
    return true
  })
}

/** decode must return or throw one of the wire layer's named errors, nothing else */
function onlyNamedErrors (fn: () => unknown): void {
  try { fn() } catch (err) {
    if (!isWireError(err)) throw new Error(`unnamed error: ${String(err)}`)
  }
}

// ---------------------------------------------------------------- arbitraries

const f32 = (min: number, max: number): fc.Arbitrary<number> =>
  fc.float({ min: Math.fround(min), max: Math.fround(max), noNaN: true })

const frameArb: fc.Arbitrary<Frame> = fc.uniqueArray(fc.integer({ min: 0, max: VOCAB_SIZE - 1 }), { maxLength: MAX_FRAME_ENTRIES })
  .chain(ids => fc.record({
    position: fc.nat({ max: 0xffffffff }),
    ids: fc.constant(Uint32Array.from(ids)),
    logprobs: fc.array(f32(MAX_LOGPROB, 0), { minLength: ids.length, maxLength: ids.length }).map(a => Float32Array.from(a)),
    tailMass: f32(0, 1)
  }))

const tokensArb = (max: number): fc.Arbitrary<Uint32Array> =>
  fc.array(fc.integer({ min: 0, max: VOCAB_SIZE - 1 }), { minLength: 1, maxLength: max }).map(a => Uint32Array.from(a))

const requestArb: fc.Arbitrary<InferRequest> = fc.oneof(
  fc.record({
    type: fc.constant('open' as const),
    protocolVersion: fc.nat({ max: 0xffffffff }),
    tokenizerFingerprint: fc.uint8Array({ minLength: 32, maxLength: 32 }),
    tokens: tokensArb(2000),
    topK: fc.integer({ min: 1, max: MAX_FRAME_ENTRIES })
  }),
  fc.record({ type: fc.constant('step' as const), tokens: tokensArb(40) }),
  fc.constant({ type: 'close' as const })
)

const openInfoArb: fc.Arbitrary<OpenInfo> = fc.record({
  frame: frameArb,
  modelName: fc.string({ maxLength: 60, unit: 'binary' }),
  contextLength: fc.nat({ max: 0xffffffff }),
  freeSlots: fc.nat({ max: 0xffffffff })
})

/** the frame a receiver should see for `f`: entries sorted by id, logprobs quantised, tail mass float32 */
function expectedFrame (f: Frame): Frame {
  const order = Array.from(f.ids.keys()).sort((a, b) => f.ids[a] - f.ids[b])
  return {
    position: f.position,
    ids: Uint32Array.from(order, i => f.ids[i]),
    logprobs: Float32Array.from(order, i => dequantizeLogprob(quantizeLogprob(f.logprobs[i]))),
    tailMass: Math.fround(f.tailMass)
  }
}

/** a realistic top-256 frame: ids mostly below 30000, logprobs spread over ~20 nats */
function realisticFrame (rand: () => number): Frame {
  const ids = new Set<number>()
  while (ids.size < 256) ids.add(rand() < 0.9 ? Math.floor(rand() * 30000) : Math.floor(rand() * VOCAB_SIZE))
  const logprobs = Float32Array.from(ids, (_, i) => -0.1 - i * 0.07 - rand() * 0.05)
  return { position: 1500, ids: Uint32Array.from(ids), logprobs, tailMass: 0.0137 }
}

// ---------------------------------------------------------------- frames

describe('wire: frame codec', () => {
  it('round-trips any valid frame (sorted ids, quantised logprobs, float32 tail mass)', () => {
    fc.assert(fc.property(frameArb, f => {
      const bytes = encodeFrame(f)
      const back = decodeFrame(bytes)
      assert.deepStrictEqual(back, expectedFrame(f))
      assert.deepStrictEqual(encodeFrame(back), bytes) // canonical: re-encoding gives the same bytes
      for (let i = 0; i < f.ids.length; i++) {
        const k = back.ids.indexOf(f.ids[i])
        assert.ok(Math.abs(back.logprobs[k] - f.logprobs[i]) <= HALF_STEP)
      }
    }), { numRuns: runs(1000) })
  })

  it('accepts entries in any order: encoding does not depend on it', () => {
    fc.assert(fc.property(frameArb, fc.nat(), (f, seed) => {
      const perm = Array.from(f.ids.keys())
      for (let i = perm.length - 1; i > 0; i--) { const j = (seed + i * 7919) % (i + 1); [perm[i], perm[j]] = [perm[j], perm[i]] }
      const shuffled = { ...f, ids: Uint32Array.from(perm, i => f.ids[i]), logprobs: Float32Array.from(perm, i => f.logprobs[i]) }
      assert.deepStrictEqual(encodeFrame(shuffled), encodeFrame(f))
    }), { numRuns: runs(300) })
  })

  it('quantisation error is at most 1/2048 nat over [-65535/1024, 0]', () => {
    fc.assert(fc.property(fc.double({ min: MAX_LOGPROB, max: 0, noNaN: true }), lp => {
      const q = quantizeLogprob(lp)
      assert.ok(Number.isInteger(q) && q >= 0 && q <= 0xffff)
      assert.ok(Math.abs(dequantizeLogprob(q) - lp) <= HALF_STEP, `${lp} -> ${q}`)
    }), { numRuns: runs(10000) })
    assert.equal(quantizeLogprob(-1 / 2048), 1) // halves round up in magnitude: floor(x + 0.5)
    assert.equal(quantizeLogprob(-3 / 2048), 2)
    assert.equal(dequantizeLogprob(0), 0)
    assert.ok(Object.is(dequantizeLogprob(0), 0)) // never -0
  })

  it('clamps float error and very small logprobs, rejects the rest', () => {
    assert.equal(quantizeLogprob(1e-3), 0)
    assert.equal(quantizeLogprob(-200), 0xffff)
    for (const bad of [NaN, Infinity, -Infinity, 0.0011, 1]) throwsNamed(() => quantizeLogprob(bad), 'InvalidFrameError')
    const f = (over: Partial<Frame>): Frame => ({ position: 1, ids: Uint32Array.of(5), logprobs: Float32Array.of(-1), tailMass: 0.5, ...over })
    assert.equal(decodeFrame(encodeFrame(f({ tailMass: 1 + 1e-7 }))).tailMass, 1)
    assert.equal(decodeFrame(encodeFrame(f({ tailMass: -1e-7 }))).tailMass, 0)
    for (const tailMass of [NaN, Infinity, 1.01, -0.01]) throwsNamed(() => encodeFrame(f({ tailMass })), 'InvalidFrameError')
    throwsNamed(() => encodeFrame(f({ ids: Uint32Array.of(5, 5), logprobs: Float32Array.of(-1, -2) })), 'InvalidFrameError')
    throwsNamed(() => encodeFrame(f({ ids: Uint32Array.of(VOCAB_SIZE) })), 'InvalidFrameError')
    throwsNamed(() => encodeFrame(f({ logprobs: Float32Array.of(-1, -2) })), 'InvalidFrameError')
    throwsNamed(() => encodeFrame(f({ position: -1 })), 'InvalidFrameError')
    throwsNamed(() => encodeFrame(f({ position: 2 ** 32 })), 'InvalidFrameError')
    throwsNamed(() => encodeFrame(f({ ids: Uint32Array.from({ length: 257 }, (_, i) => i), logprobs: new Float32Array(257) })), 'InvalidFrameError')
  })

  it('checks ids against the given vocabulary size', () => {
    const bytes = encodeFrame({ position: 0, ids: Uint32Array.of(3, 999), logprobs: Float32Array.of(-1, -2), tailMass: 0 })
    assert.deepStrictEqual([...decodeFrame(bytes, 1000).ids], [3, 999])
    throwsNamed(() => decodeFrame(bytes, 999), 'InvalidFrameError')
    throwsNamed(() => encodeFrame({ position: 0, ids: Uint32Array.of(1000), logprobs: Float32Array.of(-1), tailMass: 0 }, 1000), 'InvalidFrameError')
  })

  it('encodes a realistic 256-entry frame in ≤ 1200 bytes', () => {
    let s = 7
    const rand = (): number => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648
    const sizes: number[] = []
    for (let i = 0; i < 20; i++) sizes.push(encodeFrame(realisticFrame(rand)).byteLength)
    const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length
    console.info(`      256-entry frame: mean ${mean.toFixed(1)} B, min ${Math.min(...sizes)}, max ${Math.max(...sizes)}`)
    assert.ok(Math.max(...sizes) <= 1200)
    assert.ok(Math.max(...sizes) + 1 <= MAX_RESPONSE_BYTES)
  })
})

describe('wire: compact frames (one byte per logprob)', () => {
  /** the step of a compact frame of `f`: its deepest entry's uint16 value over 255 levels */
  const stepOf = (f: Frame): number => Math.max(0, ...Array.from(f.logprobs, lp => quantizeLogprob(lp))) / (LOGPROB_SCALE * 255)

  it('round-trips any valid frame within a step, keeps a strict argmax, canonically', () => {
    fc.assert(fc.property(frameArb, f => {
      const bytes = encodeFrame(f, VOCAB_SIZE, 'compact')
      const back = decodeFrame(bytes)
      const want = expectedFrame(f)
      assert.deepStrictEqual(back.ids, want.ids)
      assert.equal(back.position, f.position)
      assert.equal(back.tailMass, want.tailMass)
      const step = stepOf(f)
      for (let i = 0; i < f.ids.length; i++) {
        const k = back.ids.indexOf(f.ids[i])
        // half a step; the argmax up to one step more (kept above a near tie); the deepest its uint16 rounding
        assert.ok(Math.abs(back.logprobs[k] - f.logprobs[i]) <= 1.5 * step + 2 * HALF_STEP + 1e-6, `${f.logprobs[i]} -> ${back.logprobs[k]} (step ${step})`)
        assert.ok(back.logprobs[k] <= 0 && !Object.is(back.logprobs[k], -0))
      }
      // decoding and encoding again gives the same bytes
      assert.deepStrictEqual(encodeFrame(back, VOCAB_SIZE, 'compact'), bytes)
      // an entry more likely than every other stays so (greedy reads the argmax), wherever the
      // full encoding (1/1024 nat) tells them apart
      const sorted = [...f.logprobs].sort((x, y) => y - x)
      if (sorted.length >= 2 && quantizeLogprob(sorted[0]) < quantizeLogprob(sorted[1])) {
        const top = back.ids.indexOf(f.ids[f.logprobs.indexOf(sorted[0])])
        assert.ok(back.logprobs.every((lp, k) => k === top || lp < back.logprobs[top]), 'the argmax is kept')
      }
    }), { numRuns: runs(1000) })
  })

  it('a realistic 256-entry frame takes about 30 % fewer bytes than the full encoding', () => {
    let s = 11
    const rand = (): number => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648
    let full = 0
    let compact = 0
    for (let i = 0; i < 20; i++) {
      const f = realisticFrame(rand)
      full += encodeFrame(f).byteLength
      compact += encodeFrame(f, VOCAB_SIZE, 'compact').byteLength
    }
    console.info(`      256-entry frame: full ${(full / 20).toFixed(1)} B, compact ${(compact / 20).toFixed(1)} B`)
    // 256 fewer logprob bytes, 4 more for the floor (its tag and a 3-byte varint: ≈ 20 nats · 1024)
    assert.equal(full - compact, 20 * (256 - 4))
  })

  it('dequantizes q8 = 0 to 0 (never -0), q8 = 255 to the floor exactly; logprobs below −64 nats clamp to the floor', () => {
    assert.ok(Object.is(dequantizeCompact(0, 1000), 0))
    assert.equal(dequantizeCompact(255, 12345), -12345 / 1024)
    const f: Frame = { position: 3, ids: Uint32Array.of(1, 2, 3), logprobs: Float32Array.of(-0.01, -200, -30), tailMass: 0 }
    const back = decodeFrame(encodeFrame(f, VOCAB_SIZE, 'compact'))
    assert.equal(back.logprobs[1], -65535 / 1024)
    assert.ok(Math.abs(back.logprobs[2] + 30) <= 65535 / 1024 / 255 / 2 + 1e-6)
  })

  it('a frame with no entries is the same either way; a router that asked for full frames still reads compact ones', () => {
    const empty: Frame = { position: 9, ids: new Uint32Array(0), logprobs: new Float32Array(0), tailMass: 1 }
    assert.deepStrictEqual(encodeFrame(empty, VOCAB_SIZE, 'compact'), encodeFrame(empty))
    const f: Frame = { position: 4, ids: Uint32Array.of(5, 70), logprobs: Float32Array.of(-0.25, -4), tailMass: 0.1 }
    const res = decodeFrameResponse(encodeFrameResponse(f, 'compact'))
    assert.ok(res.status === Status.OK && 'frame' in res)
    assert.deepStrictEqual([...res.frame.ids], [5, 70])
  })

  it('Open carries compact_frames (field 8); an Open without it asks for full frames', () => {
    const open = { type: 'open' as const, protocolVersion: 1, tokenizerFingerprint: new Uint8Array(32), tokens: Uint32Array.of(1, 2), topK: 256 }
    assert.deepStrictEqual(decodeRequest(encodeRequest({ ...open, compactFrames: true })), { ...open, compactFrames: true })
    assert.deepStrictEqual(decodeRequest(encodeRequest(open)), open)
    assert.deepStrictEqual(decodeRequest(encodeRequest({ ...open, compactFrames: false })), open)
  })
})

// ---------------------------------------------------------------- requests

describe('wire: requests', () => {
  it('round-trips open/step/close', () => {
    fc.assert(fc.property(requestArb, req => {
      const bytes = encodeRequest(req)
      const plain = { ...req } // fc.record builds null-prototype objects
      assert.deepStrictEqual(decodeRequest(bytes), plain)
      assert.deepStrictEqual(decodeRequest(new Uint8ArrayList(bytes.subarray(0, 3), bytes.subarray(3))), plain)
    }), { numRuns: runs(1000) })
  })

  it('top_k 0 means 256', () => {
    const req = decodeRequest(encodeRequest({ type: 'open', protocolVersion: 1, tokenizerFingerprint: new Uint8Array(32), tokens: Uint32Array.of(1), topK: 0 }))
    assert.equal(req.type === 'open' && req.topK, 256)
  })

  it('rejects invalid requests by name', () => {
    const fp = new Uint8Array(32)
    const open = (over: object): InferRequest => ({ type: 'open', protocolVersion: 1, tokenizerFingerprint: fp, tokens: Uint32Array.of(1), topK: 8, ...over })
    throwsNamed(() => encodeRequest(open({ tokenizerFingerprint: new Uint8Array(31) })), 'MalformedMessageError')
    throwsNamed(() => encodeRequest(open({ tokens: new Uint32Array(0) })), 'MalformedMessageError')
    throwsNamed(() => encodeRequest(open({ topK: 257 })), 'MalformedMessageError')
    throwsNamed(() => encodeRequest({ type: 'step', tokens: Uint32Array.of(VOCAB_SIZE) }), 'MalformedMessageError')
    throwsNamed(() => encodeRequest({ type: 'step', tokens: new Uint32Array(0) }), 'MalformedMessageError')
    throwsNamed(() => encodeRequest({ type: 'step', tokens: new Uint32Array(MAX_REQUEST_TOKENS + 1) }), 'OversizedMessageError')
    throwsNamed(() => encodeRequest({ type: 'step', tokens: new Uint32Array(MAX_REQUEST_BYTES).fill(100000) }), 'OversizedMessageError')
    throwsNamed(() => decodeRequest(new Uint8Array(MAX_REQUEST_BYTES + 1)), 'OversizedMessageError')
    throwsNamed(() => decodeRequest(new Uint8ArrayList(new Uint8Array(MAX_REQUEST_BYTES), new Uint8Array(1))), 'OversizedMessageError')
    throwsNamed(() => decodeRequest(new Uint8Array(0)), 'MalformedMessageError')
  })

  it('a context of 20000 tokens fits in one Open', () => {
    const tokens = Uint32Array.from({ length: 20000 }, (_, i) => (i * 7919) % VOCAB_SIZE)
    const bytes = encodeRequest({ type: 'open', protocolVersion: 1, tokenizerFingerprint: new Uint8Array(32), tokens, topK: 256 })
    assert.ok(bytes.byteLength <= MAX_REQUEST_BYTES)
  })
})

// ---------------------------------------------------------------- responses

describe('wire: responses', () => {
  it('round-trips frame responses', () => {
    fc.assert(fc.property(frameArb, f => {
      const bytes = encodeFrameResponse(f)
      assert.equal(bytes[0], Status.OK)
      assert.deepStrictEqual(decodeFrameResponse(bytes), { status: Status.OK, frame: expectedFrame(f) })
      assert.deepStrictEqual(decodeFrameResponse(new Uint8ArrayList(bytes)), { status: Status.OK, frame: expectedFrame(f) })
    }), { numRuns: runs(1000) })
  })

  it('round-trips open responses', () => {
    fc.assert(fc.property(openInfoArb, info => {
      assert.deepStrictEqual(decodeOpenResponse(encodeOpenResponse(info)), { status: Status.OK, open: { ...info, frame: expectedFrame(info.frame) } })
    }), { numRuns: runs(1000) })
  })

  it('round-trips error responses, cutting messages to 256 bytes on a character boundary', () => {
    const statuses = [1, 2, 3, 4, 5, 6, 7] as const
    fc.assert(fc.property(fc.constantFrom(...statuses), fc.string({ maxLength: 300, unit: 'binary' }), (status, message) => {
      const bytes = encodeErrorResponse(status, message)
      assert.ok(bytes.byteLength <= 257)
      const back = decodeFrameResponse(bytes)
      assert.equal(back.status, status)
      assert.ok('message' in back && message.startsWith(back.message))
      if (Buffer.byteLength(message) <= 256) assert.equal(back.message, message)
      else assert.ok(Buffer.byteLength(back.message) > 252) // at most one 4-byte character dropped at the cut
      assert.deepStrictEqual(decodeOpenResponse(bytes), back)
    }), { numRuns: runs(1000) })
    assert.equal(decodeFrameResponse(encodeErrorResponse(Status.BUSY, 'é'.repeat(200))).status, Status.BUSY)
    const cut = decodeFrameResponse(encodeErrorResponse(Status.BUSY, '€'.repeat(100)))
    assert.ok('message' in cut && cut.message === '€'.repeat(85))
  })

  it('HALTED carries the signed HALT envelope after a 0xff mark; one too large for a response is left out', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), fc.uint8Array({ minLength: 1, maxLength: 5000 }), (message, envelope) => {
      const bytes = encodeHaltedResponse(message, envelope)
      assert.ok(bytes.byteLength <= MAX_RESPONSE_BYTES)
      const back = decodeFrameResponse(bytes)
      assert.equal(back.status, Status.HALTED)
      assert.deepStrictEqual(back, decodeOpenResponse(bytes))
      const plain = encodeErrorResponse(Status.HALTED, message)
      const fits = plain.byteLength + 1 + envelope.byteLength <= MAX_RESPONSE_BYTES
      assert.deepStrictEqual(back, fits ? { ...decodeFrameResponse(plain), haltEnvelope: envelope } : decodeFrameResponse(plain))
    }), { numRuns: runs(500) })
    assert.deepStrictEqual(decodeFrameResponse(encodeHaltedResponse('x')), decodeFrameResponse(encodeErrorResponse(Status.HALTED, 'x')))
    // the mark is HALTED's only: any other status with it is not UTF-8
    throwsNamed(() => decodeFrameResponse(Uint8Array.of(Status.BUSY, 0x61, 0xff, 1)), 'MalformedMessageError')
    throwsNamed(() => decodeFrameResponse(Uint8Array.of(Status.HALTED, 0x61, 0xff)), 'MalformedMessageError')
  })

  it('rejects invalid responses by name', () => {
    throwsNamed(() => decodeFrameResponse(new Uint8Array(MAX_RESPONSE_BYTES + 1)), 'OversizedMessageError')
    throwsNamed(() => decodeOpenResponse(new Uint8Array(MAX_RESPONSE_BYTES + 1)), 'OversizedMessageError')
    throwsNamed(() => encodeErrorResponse(Status.OK as any, 'x'), 'MalformedMessageError')
    throwsNamed(() => encodeErrorResponse(8 as any, 'x'), 'MalformedMessageError')
    const info: OpenInfo = { frame: { position: 0, ids: new Uint32Array(0), logprobs: new Float32Array(0), tailMass: 1 }, modelName: 'x'.repeat(5000), contextLength: 1, freeSlots: 1 }
    throwsNamed(() => encodeOpenResponse(info), 'OversizedMessageError')
    throwsNamed(() => encodeOpenResponse({ ...info, modelName: 'm', contextLength: -1 }), 'MalformedMessageError')
  })
})

// ---------------------------------------------------------------- vectors

interface Vector { name: string, kind: 'frame' | 'request' | 'response', answers?: 'step' | 'open', canonical?: boolean, encoding?: 'compact', value?: any, hex: string, error?: string }
const vectors: Vector[] = JSON.parse(readFileSync(new URL('../../../protocols/vectors/infer.json', import.meta.url), 'utf8'))

/** decoded message → the JSON form used by the vectors */
function frameJson (f: Frame): object { return { position: f.position, ids: [...f.ids], logprobs: [...f.logprobs], tailMass: f.tailMass, ...(f.targetLogprob !== undefined ? { targetLogprob: f.targetLogprob } : {}) } }
function toJson (v: Vector, decoded: any): any {
  if (v.kind === 'frame') return frameJson(decoded)
  if (v.kind === 'request') {
    if (decoded.type === 'open') return { ...decoded, tokenizerFingerprint: hex(decoded.tokenizerFingerprint), tokens: [...decoded.tokens] }
    return decoded.type === 'step' ? { ...decoded, tokens: [...decoded.tokens] } : decoded
  }
  if ('frame' in decoded) return { status: decoded.status, frame: frameJson(decoded.frame) }
  if ('open' in decoded) return { status: decoded.status, open: { ...decoded.open, frame: frameJson(decoded.open.frame) } }
  if (decoded.haltEnvelope != null) return { ...decoded, haltEnvelope: hex(decoded.haltEnvelope) }
  return decoded
}
/** JSON value → in-memory message, for re-encoding */
function fromJson (v: Vector): Uint8Array {
  const frame = (j: any): Frame => ({ ...j, ids: Uint32Array.from(j.ids), logprobs: Float32Array.from(j.logprobs) })
  const val = v.value
  if (v.kind === 'frame') return encodeFrame(frame(val), VOCAB_SIZE, v.encoding ?? 'full')
  if (v.kind === 'request') {
    if (val.type === 'open') return encodeRequest({ ...val, tokenizerFingerprint: unhex(val.tokenizerFingerprint), tokens: Uint32Array.from(val.tokens) })
    return encodeRequest(val.type === 'step' ? { ...val, tokens: Uint32Array.from(val.tokens) } : val)
  }
  if ('frame' in val) return encodeFrameResponse(frame(val.frame), v.encoding ?? 'full')
  if ('open' in val) return encodeOpenResponse({ ...val.open, frame: frame(val.open.frame) })
  if (val.haltEnvelope != null) return encodeHaltedResponse(val.message, unhex(val.haltEnvelope))
  return encodeErrorResponse(val.status, val.message)
}
function decodeVector (v: Vector): unknown {
  const bytes = unhex(v.hex)
  if (v.kind === 'frame') return decodeFrame(bytes)
  if (v.kind === 'request') return decodeRequest(bytes)
  return v.answers === 'open' ? decodeOpenResponse(bytes) : decodeFrameResponse(bytes)
}

describe('wire: test vectors (protocols/vectors/infer.json)', () => {
  it('has valid and invalid cases of every kind', () => {
    for (const kind of ['frame', 'request', 'response']) {
      assert.ok(vectors.some(v => v.kind === kind && v.error == null), `valid ${kind}`)
      assert.ok(vectors.some(v => v.kind === kind && v.error != null), `invalid ${kind}`)
    }
  })

  for (const v of vectors) {
    it(`${v.name}: ${v.error ?? (v.canonical === false ? 'decodes (non-canonical)' : 'decodes and re-encodes')}`, () => {
      if (v.error != null) return throwsNamed(() => decodeVector(v), v.error)
      assert.deepStrictEqual(toJson(v, decodeVector(v)), v.value)
      if (v.canonical !== false) assert.equal(hex(fromJson(v)), v.hex)
    })
  }

  it('the hex shown in protocols/infer.md matches the vectors', () => {
    const md = readFileSync(new URL('../../../protocols/infer.md', import.meta.url), 'utf8')
    const shown = [...md.matchAll(/^vector: (\S+)\nhex: ([0-9a-f ]+)$/gm)]
    assert.ok(shown.length >= 3, 'infer.md shows at least 3 vectors')
    for (const [, name, h] of shown) {
      const v = vectors.find(x => x.name === name)
      assert.ok(v != null, `vector ${name} exists`)
      assert.equal(h.replace(/ /g, ''), v.hex, name)
    }
  })
})

// ---------------------------------------------------------------- fuzz

describe('wire: fuzz (only named errors, never a crash)', () => {
  const decoders: Array<[string, (b: Uint8Array) => unknown]> = [
    ['decodeFrame', b => decodeFrame(b)],
    ['decodeRequest', b => decodeRequest(b)],
    ['decodeFrameResponse', b => decodeFrameResponse(b)],
    ['decodeOpenResponse', b => decodeOpenResponse(b)]
  ]
  for (const [name, decode] of decoders) {
    it(`${name}: random bytes`, () => {
      fc.assert(fc.property(fc.uint8Array({ maxLength: 700 }), b => onlyNamedErrors(() => decode(b))), { numRuns: runs(10000) })
    })
  }

  it('mutated frames, requests and responses', () => {
    fc.assert(fc.property(mutated(frameArb.map(f => encodeFrame(f))), b => {
      onlyNamedErrors(() => decodeFrame(b))
      onlyNamedErrors(() => decodeFrameResponse(Uint8Array.of(0, ...b)))
    }), { numRuns: runs(10000) })
    fc.assert(fc.property(mutated(requestArb.map(r => encodeRequest(r))), b => onlyNamedErrors(() => decodeRequest(b))), { numRuns: runs(10000) })
    fc.assert(fc.property(mutated(openInfoArb.map(i => encodeOpenResponse(i))), b => onlyNamedErrors(() => decodeOpenResponse(b))), { numRuns: runs(5000) })
  })
})
