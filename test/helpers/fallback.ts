import type { ModelHost, ModelSession } from '../../src/expert/model-host.js'

/** opens a session on the sampler fallback path (the env switch is read when a session is opened) */
export function openFallbackSession (host: ModelHost): ModelSession {
  const before = process.env.MESHLLM_NATIVE
  process.env.MESHLLM_NATIVE = '0'
  try {
    return host.openSession()
  } finally {
    if (before == null) delete process.env.MESHLLM_NATIVE
    else process.env.MESHLLM_NATIVE = before
  }
}
