/**
 * Ties a protocol handler's work to its stream: an AbortSignal that fires when the stream
 * closes or is reset (the remote vanished, aborted, or its connection dropped), so nothing a
 * handler runs for a peer outlives that peer's stream. Every handler combines it with its
 * own deadline (AbortSignal.any) and passes the result to every read, write and evaluation.
 */
import type { Stream, StreamCloseEvent } from '@libp2p/interface'

/** the remote end went away: the stream closed or was reset while a handler still worked for it */
export class StreamGoneError extends Error {
  static override name = 'StreamGoneError'
  override name = 'StreamGoneError'
}

export interface StreamLifetime {
  /** aborts (reason: StreamGoneError) when the stream closes or resets */
  signal: AbortSignal
  /** removes the listener; call once the handler is done */
  dispose: () => void
}

export function streamLifetime (stream: Stream): StreamLifetime {
  const ctrl = new AbortController()
  if (stream.status !== 'open') {
    ctrl.abort(new StreamGoneError(`stream ${stream.status} before the handler ran`))
    return { signal: ctrl.signal, dispose: () => {} }
  }
  const onClose = (evt: StreamCloseEvent): void => {
    ctrl.abort(new StreamGoneError(evt.error != null ? `stream closed: ${evt.error.name}: ${evt.error.message}` : 'stream closed'))
  }
  stream.addEventListener('close', onClose, { once: true })
  return { signal: ctrl.signal, dispose: () => { stream.removeEventListener('close', onClose) } }
}
