/* Wire additions for teacher forcing and prompt scoring (protocols/infer.md §2, §3, §5). */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  decodeFrame, decodeFrameResponse, decodeOpenResponse, decodeRequest, encodeFrame, encodeFrameResponse,
  encodeOpenResponse, encodeRequest, type Frame, type OpenInfo, Status
} from '../../src/wire/index.js'
import { runs } from '../helpers/fuzz.js'

function throwsNamed (fn: () => unknown, name: string): void {
  assert.throws(fn, (err: any) => err.name === name, `expected ${name}`)
}

const fingerprint = Uint8Array.from({ length: 32 }, (_, i) => i)
const frame = (extra: Partial<Frame> = {}): Frame => ({ position: 9, ids: Uint32Array.of(13, 271, 9906), logprobs: Float32Array.of(-0.5, -1.25, -3), tailMass: 0.25, ...extra })

describe('wire: Frame.target_logprob', () => {
  it('round-trips as float32 and is absent unless set', () => {
    const plain = decodeFrame(encodeFrame(frame()))
    assert.equal('targetLogprob' in plain, false)
    for (const lp of [0, -1e-9, -0.5, -7.123456789, -64, -1234.5, -1e4]) {
      const back = decodeFrame(encodeFrame(frame({ targetLogprob: lp })))
      assert.equal(back.targetLogprob, Math.fround(lp) === 0 ? 0 : Math.fround(lp))
    }
  })

  it('is additive: the frame\'s bytes plus one fixed32 field', () => {
    const without = encodeFrame(frame())
    const withT = encodeFrame(frame({ targetLogprob: -2 }))
    assert.equal(withT.byteLength, without.byteLength + 5)
    assert.deepEqual(withT.subarray(0, without.byteLength), without)
    assert.equal(withT[without.byteLength], 0x2d) // field 5, wire type 5
    // a 256-entry frame with a target stays under 1 KB
    const ids = Uint32Array.from({ length: 256 }, (_, i) => i * 97 % 30000 + i)
    const big: Frame = { position: 100, ids, logprobs: Float32Array.from(ids, (_, i) => -0.1 - i * 0.05), tailMass: 0.1, targetLogprob: -12.5 }
    assert.ok(encodeFrameResponse(big).byteLength <= 1024)
  })

  it('encoders clamp float error to 0 and reject NaN, ±∞ and positive values', () => {
    assert.equal(decodeFrame(encodeFrame(frame({ targetLogprob: 5e-4 }))).targetLogprob, 0)
    assert.equal(Object.is(decodeFrame(encodeFrame(frame({ targetLogprob: -0 }))).targetLogprob, 0), true)
    for (const bad of [NaN, Infinity, -Infinity, 0.01, 1, -1e39]) throwsNamed(() => encodeFrame(frame({ targetLogprob: bad })), 'InvalidFrameError')
  })

  it('fast-check: any finite value ≤ 0 in float32 range survives the wire', () => {
    fc.assert(fc.property(fc.double({ min: -3e38, max: 0, noNaN: true }), lp => {
      const back = decodeFrameResponse(encodeFrameResponse(frame({ targetLogprob: lp })))
      assert.equal(back.status, Status.OK)
      if (back.status !== Status.OK) return
      const f32 = Math.fround(lp)
      assert.equal(back.frame.targetLogprob, f32 === 0 ? 0 : f32)
    }), { numRuns: runs(300) })
  })
})

describe('wire: Open.target / score_prompt, Step.target', () => {
  it('round-trip, token 0 included (the field has presence)', () => {
    const open = { type: 'open' as const, protocolVersion: 1, tokenizerFingerprint: fingerprint, tokens: Uint32Array.of(128000, 5), topK: 256, target: 0, scorePrompt: true }
    assert.deepEqual(decodeRequest(encodeRequest(open)), open)
    const step = { type: 'step' as const, tokens: Uint32Array.of(7), target: 128255 }
    assert.deepEqual(decodeRequest(encodeRequest(step)), step)
    const withDraft = { type: 'step' as const, tokens: Uint32Array.of(7), draft: Uint32Array.of(8, 9), rollback: 2, target: 11 }
    assert.deepEqual(decodeRequest(encodeRequest(withDraft)), withDraft)
  })

  it('absent target and scorePrompt false change nothing on the wire', () => {
    const base = { type: 'open' as const, protocolVersion: 1, tokenizerFingerprint: fingerprint, tokens: Uint32Array.of(128000, 5), topK: 64 }
    assert.deepEqual(encodeRequest({ ...base, scorePrompt: false }), encodeRequest(base))
    const decoded = decodeRequest(encodeRequest(base))
    assert.equal('target' in decoded, false)
    assert.equal('scorePrompt' in decoded, false)
  })

  it('rejects a target outside the vocabulary (encode and decode)', () => {
    throwsNamed(() => encodeRequest({ type: 'step', tokens: Uint32Array.of(1), target: 128256 }), 'MalformedMessageError')
    throwsNamed(() => encodeRequest({ type: 'step', tokens: Uint32Array.of(1), target: -1 }), 'MalformedMessageError')
    throwsNamed(() => encodeRequest({ type: 'step', tokens: Uint32Array.of(1), target: 1.5 }), 'MalformedMessageError')
    // Step{tokens [1], target 128256}
    throwsNamed(() => decodeRequest(Uint8Array.of(0x12, 0x07, 0x0a, 0x01, 0x01, 0x20, 0x80, 0xea, 0x07)), 'MalformedMessageError')
  })
})

describe('wire: OpenInfo.prompt_logprob / prompt_scored', () => {
  const info: OpenInfo = { frame: frame({ targetLogprob: -1.5 }), modelName: 'meshtest-a', contextLength: 512, freeSlots: 3 }

  it('round-trips (double precision) and is absent unless set', () => {
    const plain = decodeOpenResponse(encodeOpenResponse(info))
    assert.equal(plain.status, Status.OK)
    if (plain.status !== Status.OK) return
    assert.equal('promptLogprob' in plain.open, false)
    const scored = decodeOpenResponse(encodeOpenResponse({ ...info, promptLogprob: -123.456789012345, promptScored: 41 }))
    assert.equal(scored.status, Status.OK)
    if (scored.status !== Status.OK) return
    assert.equal(scored.open.promptLogprob, -123.456789012345)
    assert.equal(scored.open.promptScored, 41)
    assert.equal(scored.open.frame.targetLogprob, -1.5)
  })

  it('is additive: the old response bytes come first', () => {
    const without = encodeOpenResponse(info)
    const withScore = encodeOpenResponse({ ...info, promptLogprob: -2, promptScored: 1 })
    assert.deepEqual(withScore.subarray(0, without.byteLength), without)
  })

  it('encoders reject half a pair, non-finite and positive sums', () => {
    throwsNamed(() => encodeOpenResponse({ ...info, promptLogprob: -1 }), 'MalformedMessageError')
    throwsNamed(() => encodeOpenResponse({ ...info, promptScored: 2 }), 'MalformedMessageError')
    throwsNamed(() => encodeOpenResponse({ ...info, promptLogprob: NaN, promptScored: 2 }), 'MalformedMessageError')
    throwsNamed(() => encodeOpenResponse({ ...info, promptLogprob: 0.5, promptScored: 2 }), 'MalformedMessageError')
    throwsNamed(() => encodeOpenResponse({ ...info, promptLogprob: -1, promptScored: -2 }), 'MalformedMessageError')
  })
})
