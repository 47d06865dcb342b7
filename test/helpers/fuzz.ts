import fc from 'fast-check'

/**
 * Property-test sizes. `npm test` runs each property with its base count (≥ 10^4 cases for
 * every decoder); `npm run test:fuzz` sets MESHLLM_FUZZ_SCALE (default there: 20) for the long
 * run on demand.
 */
const scale = Math.max(1, Number(process.env.MESHLLM_FUZZ_SCALE ?? 1) || 1)

export function runs (base: number): number {
  return Math.round(base * scale)
}

/** a valid encoding with a few bytes overwritten and maybe cut short */
export function mutated (valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.tuple(valid, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }), fc.option(fc.nat()))
    .map(([b, edits, cut]) => {
      const out = Uint8Array.from(b)
      for (const [at, value] of edits) if (out.length > 0) out[at % out.length] = value
      return cut == null ? out : out.subarray(0, cut % (out.length + 1))
    })
}
