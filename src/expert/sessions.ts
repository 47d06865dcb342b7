/**
 * How many sessions (KV sequences) an expert serves at once: the bounds every entry point
 * shares (`join --max-sessions`, RegisterExpert's max_sessions, ModelHostOptions.maxSessions).
 * Light on purpose (no imports): `meshllm --help` loads it.
 */

/** the most sessions one expert may be given */
export const MAX_SESSIONS = 1024
/** 'auto' sessions: never fewer (the fixed default before 'auto') */
export const AUTO_MIN_SESSIONS = 4
/** 'auto' sessions: never more (16 concurrent generations at K = 4 on 4 experts reach the goal: README "Many users at once") */
export const AUTO_MAX_SESSIONS = 16
/** 'auto' sessions: the share of the memory free after the model loaded that their KV cache may take */
export const AUTO_SESSION_MEMORY_SHARE = 0.25

/**
 * The sessions 'auto' gives a host: as many whose KV cache (perSessionBytes each) fits in
 * AUTO_SESSION_MEMORY_SHARE of `freeBytes`, within [AUTO_MIN_SESSIONS, AUTO_MAX_SESSIONS].
 * An unknown cost (not a positive finite number) gives the minimum.
 */
export function autoSessions (perSessionBytes: number, freeBytes: number): number {
  if (!(perSessionBytes > 0 && perSessionBytes < Infinity) || !(freeBytes >= 0 && freeBytes < Infinity)) return AUTO_MIN_SESSIONS
  const fit = Math.floor(AUTO_SESSION_MEMORY_SHARE * freeBytes / perSessionBytes)
  return Math.max(AUTO_MIN_SESSIONS, Math.min(AUTO_MAX_SESSIONS, fit))
}
