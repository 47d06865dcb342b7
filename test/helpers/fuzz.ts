/**
 * Property-test sizes. `npm test` runs each property with its base count (≥ 10^4 cases for
 * every decoder); `npm run test:fuzz` sets MESHLLM_FUZZ_SCALE (default there: 20) for the long
 * run on demand.
 */
const scale = Math.max(1, Number(process.env.MESHLLM_FUZZ_SCALE ?? 1) || 1)

export function runs (base: number): number {
  return Math.round(base * scale)
}
