// Writes protocols/vectors/infer.json: test vectors of /meshllm/infer/1.0.0 (protocols/infer.md).
// Run after `npm run build`: node scripts/make-vectors.mjs
//
// Each case: { name, kind: 'frame' | 'request' | 'response', hex, ... } and either
//   value     — the decoded message as JSON (typed arrays as arrays, bytes as hex), or
//   error     — the name of the error decoding must throw.
// Response cases say which response they answer: `answers: 'step' | 'open'`.
// Valid cases with `canonical: false` decode to `value`, but the encoder writes other bytes for it.
// Decoding uses vocabSize 128256 throughout.
import { writeFile } from 'node:fs/promises'
import * as wire from '../dist/src/wire/index.js'

const hex = b => Buffer.from(b).toString('hex')
const unhex = h => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'))

// --- tiny protobuf helpers for hand-made (non-canonical or invalid) bytes
const varint = n => { const out = []; while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128) } out.push(n); return out }
const field = (no, payload) => [...varint(no << 3 | 2), ...varint(payload.length), ...payload]
const vfield = (no, v) => [...varint(no << 3), ...varint(v)]
const f32 = (no, v) => { const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, v, true); return [...varint(no << 3 | 5), ...b] }

/** decoded values → JSON */
const frameJson = f => ({ position: f.position, ids: [...f.ids], logprobs: [...f.logprobs], tailMass: f.tailMass, ...(f.targetLogprob !== undefined ? { targetLogprob: f.targetLogprob } : {}) })
function toJson (kind, v) {
  if (kind === 'frame') return frameJson(v)
  if (kind === 'request') return v.type === 'open' ? { ...v, tokenizerFingerprint: hex(v.tokenizerFingerprint), tokens: [...v.tokens] } : v.type === 'step' ? { ...v, tokens: [...v.tokens] } : v
  if ('frame' in v) return { status: v.status, frame: frameJson(v.frame) }
  if ('open' in v) return { status: v.status, open: { ...v.open, frame: frameJson(v.open.frame) } }
  if (v.haltEnvelope != null) return { ...v, haltEnvelope: hex(v.haltEnvelope) }
  return v
}

const frame = (position, ids, logprobs, tailMass) => ({ position, ids: Uint32Array.from(ids), logprobs: Float32Array.from(logprobs), tailMass })
const fingerprint = Uint8Array.from({ length: 32 }, (_, i) => i)

// deterministic "realistic" 256-entry frame: ids mostly below 30000, logprobs descending-ish
let seed = 42
const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
const bigIds = new Set()
while (bigIds.size < 256) bigIds.add(rnd() < 0.9 ? Math.floor(rnd() * 30000) : Math.floor(rnd() * 128256))
const big = frame(77, [...bigIds], [...bigIds].map((_, i) => -0.05 - i * 0.06 - rnd() * 0.05), 0.0123)

const threeEntries = frame(5, [13, 271, 9906], [-0.5, -1.25, -3.0009765625], 0.25)
const openInfo = { frame: frame(4, [11, 1917], [-0.125, -2.5], 0.5), modelName: 'Llama-3.2-1B-Instruct-Q8_0', contextLength: 8192, freeSlots: 3 }

const cases = []
const valid = (name, kind, value, encode, decode) => {
  const b = encode(value)
  cases.push({ name, kind, value: toJson(kind, decode(b)), hex: hex(b) })
}
const nonCanonical = (name, kind, h, decode) => cases.push({ name, kind, canonical: false, value: toJson(kind, decode(unhex(h))), hex: h })
const invalid = (name, kind, h, decode, error, extra = {}) => {
  let got = 'no error'
  try { decode(unhex(h)) } catch (err) { got = err.name }
  if (got !== error) throw new Error(`${name}: expected ${error}, got ${got}`)
  cases.push({ name, kind, ...extra, hex: h, error })
}
const MAL = 'MalformedMessageError'
const INV = 'InvalidFrameError'

// ---------------------------------------------------------------- frames
const F = [wire.encodeFrame, b => wire.decodeFrame(b)]
valid('frame/empty-all-tail', 'frame', frame(0, [], [], 1), ...F)
valid('frame/three-entries', 'frame', threeEntries, ...F)
valid('frame/extremes', 'frame', frame(4294967295, [0, 128255], [0, -64], 0), ...F)
valid('frame/256-entries', 'frame', big, ...F)
nonCanonical('frame/unknown-field-skipped', 'frame', hex([...vfield(1, 5), ...field(2, [7]), ...field(3, [0, 4]), ...vfield(15, 1)]), F[1])
invalid('frame/truncated-protobuf', 'frame', hex([...vfield(1, 5), 0x12, 0x05, 0x01]), F[1], MAL)
invalid('frame/ids-wrong-wire-type', 'frame', hex([...vfield(2, 7), ...field(3, [0, 4])]), F[1], MAL)
invalid('frame/odd-logprobs-length', 'frame', hex([...field(2, [7]), ...field(3, [0, 4, 0])]), F[1], INV)
invalid('frame/more-ids-than-logprobs', 'frame', hex([...field(2, [7, 1]), ...field(3, [0, 4])]), F[1], INV)
invalid('frame/fewer-ids-than-logprobs', 'frame', hex([...field(2, [7]), ...field(3, [0, 4, 0, 8])]), F[1], INV)
invalid('frame/duplicate-id', 'frame', hex([...field(2, [7, 0]), ...field(3, [0, 4, 0, 8])]), F[1], INV)
invalid('frame/id-out-of-vocabulary', 'frame', hex([...field(2, varint(128256)), ...field(3, [0, 4])]), F[1], INV)
invalid('frame/ids-varint-overflow', 'frame', hex([...field(2, [0xff, 0xff, 0xff, 0xff, 0x1f]), ...field(3, [0, 4])]), F[1], INV)
invalid('frame/ids-varint-truncated', 'frame', hex([...field(2, [0x80]), ...field(3, [0, 4])]), F[1], INV)
invalid('frame/ids-varint-overlong', 'frame', hex([...field(2, [0x87, 0x00]), ...field(3, [0, 4])]), F[1], INV)
invalid('frame/257-entries', 'frame', hex([...field(2, [0, ...Array(256).fill(1)]), ...field(3, Array(514).fill(0))]), F[1], INV)
invalid('frame/tail-mass-nan', 'frame', hex(f32(4, NaN)), F[1], INV)
invalid('frame/tail-mass-above-1', 'frame', hex(f32(4, 1.5)), F[1], INV)
invalid('frame/tail-mass-negative', 'frame', hex(f32(4, -0.5)), F[1], INV)
invalid('frame/tail-mass-infinite', 'frame', hex(f32(4, Infinity)), F[1], INV)
// teacher forcing (optional field 5)
valid('frame/target-logprob', 'frame', { ...frame(5, [13, 271], [-0.5, -1.25], 0.25), targetLogprob: -7.5 }, ...F)
valid('frame/target-logprob-zero', 'frame', { ...frame(1, [7], [0], 0), targetLogprob: 0 }, ...F)
invalid('frame/target-logprob-positive', 'frame', hex([...field(2, [7]), ...field(3, [0, 4]), ...f32(5, 0.5)]), F[1], INV)
invalid('frame/target-logprob-nan', 'frame', hex([...field(2, [7]), ...field(3, [0, 4]), ...f32(5, NaN)]), F[1], INV)
invalid('frame/target-logprob-infinite', 'frame', hex([...field(2, [7]), ...field(3, [0, 4]), ...f32(5, -Infinity)]), F[1], INV)
invalid('frame/target-logprob-as-varint', 'frame', hex([...field(2, [7]), ...field(3, [0, 4]), ...vfield(5, 1)]), F[1], MAL)

// compact frames (one byte per logprob, step = logprob_floor / (1024 · 255)): `encoding: 'compact'`
// says the bytes are what an encoder writes with that encoding
const C = [v => wire.encodeFrame(v, wire.VOCAB_SIZE, 'compact'), b => wire.decodeFrame(b)]
const compact = (name, value) => { valid(name, 'frame', value, ...C); cases[cases.length - 1].encoding = 'compact' }
compact('frame/compact-three-entries', threeEntries)
compact('frame/compact-256-entries', big)
compact('frame/compact-all-zero', frame(2, [9], [0], 0))
compact('frame/compact-target-logprob', { ...frame(5, [13, 271], [-0.5, -1.25], 0.25), targetLogprob: -7.5 })
invalid('frame/compact-and-full-logprobs', 'frame', hex([...field(2, [7]), ...field(3, [0, 4]), ...field(6, [255]), ...vfield(7, 1024)]), F[1], INV)
invalid('frame/compact-floor-without-entries', 'frame', hex(vfield(7, 1024)), F[1], INV)
invalid('frame/compact-floor-above-65535', 'frame', hex([...field(2, [7]), ...field(6, [255]), ...vfield(7, 65536)]), F[1], INV)
invalid('frame/compact-entry-without-floor', 'frame', hex([...field(2, [7]), ...field(6, [3])]), F[1], INV)
invalid('frame/compact-more-ids-than-logprobs', 'frame', hex([...field(2, [7, 1]), ...field(6, [255]), ...vfield(7, 1024)]), F[1], INV)
invalid('frame/compact-floor-as-bytes', 'frame', hex([...field(2, [7]), ...field(6, [255]), ...field(7, [1])]), F[1], MAL)

// ---------------------------------------------------------------- requests
const R = [wire.encodeRequest, wire.decodeRequest]
valid('request/open', 'request', { type: 'open', protocolVersion: 1, tokenizerFingerprint: fingerprint, tokens: Uint32Array.of(128000, 9906, 11, 1917), topK: 64 }, ...R)
valid('request/step', 'request', { type: 'step', tokens: Uint32Array.of(1917) }, ...R)
valid('request/step-catch-up', 'request', { type: 'step', tokens: Uint32Array.of(13, 220, 128255) }, ...R)
valid('request/close', 'request', { type: 'close' }, ...R)
valid('request/open-target-score-prompt', 'request', { type: 'open', protocolVersion: 1, tokenizerFingerprint: fingerprint, tokens: Uint32Array.of(128000, 9906, 11), topK: 256, target: 0, scorePrompt: true }, ...R)
valid('request/open-compact-frames', 'request', { type: 'open', protocolVersion: 1, tokenizerFingerprint: fingerprint, tokens: Uint32Array.of(128000, 9906), topK: 256, compactFrames: true }, ...R)
valid('request/step-target', 'request', { type: 'step', tokens: Uint32Array.of(1917), target: 13 }, ...R)
invalid('request/step-target-out-of-vocabulary', 'request', hex(field(2, [...field(1, [1]), ...vfield(4, 128256)])), R[1], MAL)
const openFields = (extra = []) => [...vfield(1, 1), ...field(2, [...fingerprint]), ...extra]
nonCanonical('request/open-top-k-omitted-means-256', 'request', hex(field(1, openFields(field(3, [1])))), R[1])
nonCanonical('request/step-unpacked-tokens', 'request', hex(field(2, [...vfield(1, 13), ...vfield(1, 14)])), R[1])
nonCanonical('request/close-unknown-fields-skipped', 'request', hex([...vfield(15, 1), ...field(3, vfield(2, 9))]), R[1])
invalid('request/empty', 'request', '', R[1], MAL)
invalid('request/two-messages', 'request', hex([...field(2, field(1, [1])), ...field(3, [])]), R[1], MAL)
invalid('request/step-twice', 'request', hex([...field(2, field(1, [1])), ...field(2, field(1, [2]))]), R[1], MAL)
invalid('request/step-without-tokens', 'request', hex(field(2, [])), R[1], MAL)
invalid('request/step-token-out-of-vocabulary', 'request', hex(field(2, field(1, varint(128256)))), R[1], MAL)
invalid('request/step-as-varint', 'request', hex(vfield(2, 1)), R[1], MAL)
invalid('request/open-fingerprint-31-bytes', 'request', hex(field(1, [...vfield(1, 1), ...field(2, Array(31).fill(0)), ...field(3, [1])])), R[1], MAL)
invalid('request/open-without-tokens', 'request', hex(field(1, openFields())), R[1], MAL)
invalid('request/open-top-k-257', 'request', hex(field(1, openFields([...field(3, [1]), ...vfield(4, 257)]))), R[1], MAL)
invalid('request/truncated', 'request', hex(field(2, field(1, [1, 2, 3])).slice(0, 4)), R[1], MAL)
invalid('request/group-wire-type', 'request', hex([0x0b, 0x0c]), R[1], MAL)
invalid('request/open-target-as-bytes', 'request', hex(field(1, openFields([...field(3, [1]), ...field(6, [1])]))), R[1], MAL)

// ---------------------------------------------------------------- responses
const S = [wire.encodeFrameResponse, b => wire.decodeFrameResponse(b)]
const O = b => wire.decodeOpenResponse(b)
const step = { answers: 'step' }
const open = { answers: 'open' }
const withAnswers = (extra, fn) => { const before = cases.length; fn(); Object.assign(cases[before], extra); const c = cases[before]; cases[before] = { name: c.name, kind: c.kind, answers: c.answers, ...c } }
withAnswers(step, () => valid('response/step-ok', 'response', threeEntries, ...S))
withAnswers(open, () => valid('response/open-ok', 'response', openInfo, wire.encodeOpenResponse, O))
withAnswers(open, () => valid('response/open-ok-prompt-score', 'response', { ...openInfo, frame: { ...openInfo.frame, targetLogprob: -3.25 }, promptLogprob: -12.75, promptScored: 3 }, wire.encodeOpenResponse, O))
withAnswers(step, () => { valid('response/step-ok-compact', 'response', threeEntries, v => wire.encodeFrameResponse(v, 'compact'), S[1]); cases[cases.length - 1].encoding = 'compact' })
withAnswers(step, () => valid('response/step-ok-target', 'response', { ...threeEntries, targetLogprob: -9.5 }, ...S))
withAnswers(step, () => valid('response/busy', 'response', 'busy: 4/4 sessions', m => wire.encodeErrorResponse(wire.Status.BUSY, m), S[1]))
withAnswers(open, () => valid('response/incompatible', 'response', 'tokenizer fingerprint mismatch', m => wire.encodeErrorResponse(wire.Status.INCOMPATIBLE, m), O))
withAnswers(step, () => valid('response/halted-empty-message', 'response', '', m => wire.encodeErrorResponse(wire.Status.HALTED, m), S[1]))
// HALTED with the signed HALT envelope the expert holds (bytes the codec does not check: only
// the router's governance verifies them); here a stand-in starting like a real one
const haltEnvelope = unhex('4d4553484c4c4d2d474f5601' + '00'.repeat(8) + 'c0ffee')
withAnswers(step, () => valid('response/halted-with-envelope', 'response', { message: 'halted by governance: drill', haltEnvelope }, m => wire.encodeHaltedResponse(m.message, m.haltEnvelope), S[1]))
invalid('response/halted-empty-envelope', 'response', '05' + hex(Buffer.from('halted')) + 'ff', S[1], MAL, step)
invalid('response/busy-with-envelope-mark', 'response', '03' + hex(Buffer.from('busy')) + 'ff01', S[1], MAL, step)
invalid('response/empty', 'response', '', S[1], MAL, step)
invalid('response/unknown-status', 'response', '08', S[1], MAL, step)
invalid('response/message-not-utf8', 'response', '03c328', S[1], MAL, step)
invalid('response/message-257-bytes', 'response', '03' + '61'.repeat(257), S[1], MAL, step)
invalid('response/ok-bad-frame', 'response', '00' + hex(field(3, [0, 4, 0])), S[1], INV, step)
invalid('response/ok-garbage', 'response', '00ff', S[1], MAL, step)
invalid('response/open-without-frame', 'response', '00' + hex(field(2, [0x61])), O, MAL, open)
invalid('response/open-prompt-logprob-positive', 'response', '00' + hex([...field(1, [...field(2, [7]), ...field(3, [0, 4])]), 0x29, ...new Uint8Array(new Float64Array([1.5]).buffer), ...vfield(6, 2)]), O, MAL, open)
invalid('response/open-frame-out-of-vocabulary', 'response', '00' + hex(field(1, [...field(2, varint(200000)), ...field(3, [0, 4])])), O, INV, open)

const json = JSON.stringify(cases, null, 2)
  .replace(/\[\s+([-\d.e,\s]+?)\s+\]/g, (_, inner) => `[${inner.split(/,\s*/).join(', ')}]`) // number arrays on one line
await writeFile(new URL('../protocols/vectors/infer.json', import.meta.url), json + '\n')
console.info(`${cases.length} vectors written to protocols/vectors/infer.json`)
