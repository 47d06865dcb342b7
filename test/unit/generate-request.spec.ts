/**
 * /meshllm/generate/1.0.0 decoding and request checks (protocols/generate.md): every byte
 * string a remote client can send either fails to decode with an Error or decodes to a request
 * that parseGenerateRequest accepts within the documented ranges or refuses with
 * InvalidGenerateRequestError (or, for an option out of range, InvalidGenerateOptionError: the
 * validation every interface shares, src/router/options.ts). Never a crash, never an out-of-range option reaching a router.
 */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { GenerateEvent, GenerateRequest } from '../../src/router/pb/generate.js'
import { parseGenerateRequest, MAX_STOP_LENGTH, MAX_STOP_STRINGS } from '../../src/router/generate-service.js'
import { mutated, runs } from '../helpers/fuzz.js'

function checkOptions (req: GenerateRequest): void {
  let opts
  try {
    opts = parseGenerateRequest(req, 2048)
  } catch (err: any) {
    assert.ok(['InvalidGenerateRequestError', 'InvalidGenerateOptionError'].includes(err.name), `unexpected ${err.name}: ${err.message}`)
    return
  }
  assert.ok(req.prompt.length > 0)
  assert.ok(opts.k === undefined || (Number.isInteger(opts.k) && opts.k >= 1 && opts.k <= 64))
  assert.ok(Number.isInteger(opts.maxTokens) && (opts.maxTokens as number) >= 1 && (opts.maxTokens as number) <= 2048)
  assert.ok(Number.isFinite(opts.temperature) && (opts.temperature as number) >= 0 && (opts.temperature as number) <= 10)
  assert.ok(Number.isInteger(opts.topK) && (opts.topK as number) >= 0 && (opts.topK as number) <= 256)
  assert.ok((opts.topP as number) > 0 && (opts.topP as number) <= 1)
  assert.ok((opts.stop ?? []).length <= MAX_STOP_STRINGS && (opts.stop ?? []).every(s => s.length <= MAX_STOP_LENGTH))
  assert.ok(['mixture', 'product', 'median', 'trimmed'].includes(opts.rule as string))
}

function decodeOrError<T> (fn: () => T): T | undefined {
  try { return fn() } catch (err) {
    assert.ok(err instanceof Error, `a non-Error was thrown: ${String(err)}`)
    return undefined
  }
}

const requestArb: fc.Arbitrary<GenerateRequest> = fc.record({
  prompt: fc.string({ maxLength: 64 }),
  k: fc.oneof(fc.nat({ max: 80 }), fc.constant(0xffffffff)),
  maxTokens: fc.oneof(fc.nat({ max: 4096 }), fc.constant(0xffffffff)),
  temperature: fc.oneof(fc.float({ min: 0, max: 12, noNaN: true }), fc.constantFrom(Number.NaN, Infinity, -1)),
  topK: fc.oneof(fc.nat({ max: 300 }), fc.constant(0xffffffff)),
  topP: fc.oneof(fc.float({ min: 0, max: 1, noNaN: true }), fc.constantFrom(Number.NaN, 1.5, -0.5)),
  seed: fc.bigUint64Array({ minLength: 1, maxLength: 1 }).map(a => a[0]),
  hasSeed: fc.boolean(),
  stop: fc.array(fc.string({ maxLength: 300 }), { maxLength: 20 }),
  rule: fc.constantFrom('', 'mixture', 'product', 'median', 'trimmed', 'bogus')
})

describe('generate protocol: request checks and decoder fuzz', () => {
  it('any encodable request: accepted within the documented ranges or refused by name', () => {
    fc.assert(fc.property(requestArb, req => {
      const back = GenerateRequest.decode(GenerateRequest.encode(req))
      checkOptions(back)
    }), { numRuns: runs(10000) })
  })

  it('refuses the documented out-of-range values: InvalidGenerateRequestError, options InvalidGenerateOptionError', () => {
    const ok: GenerateRequest = { prompt: 'x', k: 3, maxTokens: 8, temperature: 0.8, topK: 0, topP: 0.95, seed: 0n, hasSeed: false, stop: [], rule: 'mixture' }
    assert.doesNotThrow(() => parseGenerateRequest(ok))
    for (const bad of [{ prompt: '' }, { k: 9 }] as Array<Partial<GenerateRequest>>) {
      assert.throws(() => parseGenerateRequest({ ...ok, ...bad }), { name: 'InvalidGenerateRequestError' }, JSON.stringify(bad))
    }
    // the options: the schema every interface shares (stop strings and max_tokens included)
    for (const bad of [{ k: 65 }, { temperature: Number.NaN }, { temperature: 11 }, { topK: 257 }, { topP: 2 }, { topP: Number.NaN }, { rule: 'vote' }, { stop: new Array(17).fill('a') }, { stop: ['a'.repeat(257)] }, { stop: [''] }, { maxTokens: 2049 }] as Array<Partial<GenerateRequest>>) {
      assert.throws(() => parseGenerateRequest({ ...ok, ...bad }, 2048), { name: 'InvalidGenerateOptionError' }, JSON.stringify(bad))
    }
    assert.equal(parseGenerateRequest({ ...ok, maxTokens: 2048 }, 2048).maxTokens, 2048)
    assert.equal(parseGenerateRequest({ ...ok, maxTokens: 0 }, 2048).maxTokens, 64)
    assert.equal(parseGenerateRequest({ ...ok, stop: new Array(16).fill('a'.repeat(256)) }).stop?.length, 16)
  })

  it('random bytes: GenerateRequest and GenerateEvent decode or throw an Error', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), b => {
      const req = decodeOrError(() => GenerateRequest.decode(b))
      if (req != null) checkOptions(req)
      decodeOrError(() => GenerateEvent.decode(b))
    }), { numRuns: runs(10000) })
  })

  it('mutated valid requests and events', () => {
    fc.assert(fc.property(mutated(requestArb.map(r => GenerateRequest.encode(r))), b => {
      const req = decodeOrError(() => GenerateRequest.decode(b))
      if (req != null) checkOptions(req)
    }), { numRuns: runs(10000) })
    const eventArb: fc.Arbitrary<GenerateEvent> = fc.oneof(
      fc.record({ token: fc.record({ id: fc.nat(), text: fc.string({ maxLength: 16 }), experts: fc.array(fc.string({ maxLength: 52 }), { maxLength: 4 }) }) }),
      fc.record({ error: fc.record({ name: fc.string({ maxLength: 24 }), message: fc.string({ maxLength: 64 }) }) })
    ) as fc.Arbitrary<GenerateEvent>
    fc.assert(fc.property(mutated(eventArb.map(e => GenerateEvent.encode(e))), b => { decodeOrError(() => GenerateEvent.decode(b)) }), { numRuns: runs(10000) })
  })
})

describe('--generate-token file: the same rules as --api-token-file', () => {
  it('reads the first line of a mode-600 file; refuses one group/others can read, an empty one and a missing one (GenerateTokenFileError)', async () => {
    const { mkdtempSync, writeFileSync, chmodSync, rmSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { generateTokenFrom } = await import('../../src/router/generate-service.js')
    const dir = mkdtempSync(join(tmpdir(), 'meshllm-gtoken-'))
    try {
      const f = join(dir, 'token')
      writeFileSync(f, 's3cret\nsecond line\n', { mode: 0o600 })
      assert.equal(await generateTokenFrom(f, {}), 's3cret')
      chmodSync(f, 0o644)
      await assert.rejects(generateTokenFrom(f, {}), { name: 'GenerateTokenFileError' })
      const empty = join(dir, 'empty')
      writeFileSync(empty, '\n', { mode: 0o600 })
      await assert.rejects(generateTokenFrom(empty, {}), { name: 'GenerateTokenFileError' })
      await assert.rejects(generateTokenFrom(join(dir, 'missing'), {}), { name: 'GenerateTokenFileError' })
      assert.equal(await generateTokenFrom(undefined, { MESHLLM_GENERATE_TOKEN: 'env' }), 'env')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
