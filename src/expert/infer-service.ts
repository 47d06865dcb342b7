/**
 * The expert side of /meshllm/infer/1.0.0 (spec: protocols/infer.md), shaped like
 * js-libp2p's protocol services: explicit Components/Init, start/stop registering the
 * handler with stream limits, a deadline on every read and write, stream.abort on failure.
 * An expert serves and never routes.
 */
import type { ComponentLogger, Logger, Startable, Stream, Connection } from '@libp2p/interface'
import type { Registrar } from '@libp2p/interface-internal'
import { lpStream } from '@libp2p/utils'
import { equals } from 'uint8arrays/equals'
import { INFER_PROTOCOL, INFER_PROTOCOL_VERSION, MAX_REQUEST_BYTES, Status } from '../wire/types.js'
import { decodeRequest, encodeErrorResponse, encodeFrameResponse, encodeHaltedResponse, encodeOpenResponse } from '../wire/infer-codec.js'
import type { EvaluateOptions, EvaluateResult, ModelHost, ModelSession } from './model-host.js'

export interface InferServiceComponents {
  registrar: Registrar
  logger: ComponentLogger
}

export interface InferServiceInit {
  host: ModelHost
  /** a session with no request for this long is evicted (ms) */
  idleTimeoutMs?: number
  /** deadline for writing one response (ms) */
  writeTimeoutMs?: number
  /** deadline for evaluating one request (ms) */
  evalTimeoutMs?: number
  /** governance hook: returns the halt reason while the mesh is halted */
  haltReason?: () => string | undefined
  /** governance hook: the signed HALT envelope in force, sent with every HALTED answer (protocols/infer.md §3) */
  haltEnvelope?: () => Uint8Array | undefined
}

export interface InferServiceStats {
  sessionsOpened: number
  sessionsRefused: number
  sessionsEvicted: number
  frames: number
  bytesOut: number
  bytesIn: number
}

class RequestError extends Error {
  constructor (readonly status: Exclude<Status, Status.OK>, message: string) { super(message) }
}

export class InferService implements Startable {
  readonly protocol = INFER_PROTOCOL
  private readonly components: InferServiceComponents
  private readonly host: ModelHost
  private readonly log: Logger
  private readonly idleTimeoutMs: number
  private readonly writeTimeoutMs: number
  private readonly evalTimeoutMs: number
  private readonly haltReason: () => string | undefined
  private readonly live = new Set<Stream>()
  /** evaluations still running per session (awaited before the session is freed) */
  private readonly inflight = new Map<ModelSession, Promise<void>>()
  private started = false
  readonly stats: InferServiceStats = { sessionsOpened: 0, sessionsRefused: 0, sessionsEvicted: 0, frames: 0, bytesOut: 0, bytesIn: 0 }

  constructor (components: InferServiceComponents, private readonly init: InferServiceInit) {
    this.components = components
    this.host = init.host
    this.log = components.logger.forComponent('meshllm:expert:infer')
    this.idleTimeoutMs = init.idleTimeoutMs ?? 60_000
    this.writeTimeoutMs = init.writeTimeoutMs ?? 10_000
    this.evalTimeoutMs = init.evalTimeoutMs ?? 30_000
    this.haltReason = init.haltReason ?? (() => undefined)
    this.handle = this.handle.bind(this)
  }

  readonly [Symbol.toStringTag] = 'meshllm/infer'

  async start (): Promise<void> {
    await this.components.registrar.handle(this.protocol, this.handle, {
      // well beyond the session limit so a burst of refusals is answered with BUSY (a
      // refused stream is answered and closed at once) instead of being reset by libp2p
      maxInboundStreams: Math.max(64, this.host.maxSessions * 2 + 8),
      // a routing component in the same node opens outbound infer streams
      maxOutboundStreams: 256
    })
    this.started = true
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(this.protocol)
    for (const s of this.live) s.abort(new Error('expert shutting down'))
    this.live.clear()
    this.started = false
  }

  isStarted (): boolean {
    return this.started
  }

  /** Ends every open session with HALTED (called by governance on a valid HALT). */
  haltAll (reason: string): void {
    for (const s of this.live) {
      ;(s as any).meshllmHalt?.(reason)
    }
  }

  private async handle (stream: Stream, connection: Connection): Promise<void> {
    const log = this.log.newScope?.(connection.remotePeer.toString().slice(-6)) ?? this.log
    const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
    let session: ModelSession | undefined
    this.live.add(stream)
    const halted = new AbortController()
    ;(stream as any).meshllmHalt = (reason: string) => halted.abort(new RequestError(Status.HALTED, `halted by governance: ${reason}`))
    const write = async (bytes: Uint8Array): Promise<void> => {
      this.stats.bytesOut += bytes.byteLength + 2
      await lp.write(bytes, { signal: AbortSignal.timeout(this.writeTimeoutMs) })
    }
    try {
      while (true) {
        let msg
        try {
          msg = await lp.read({ signal: AbortSignal.any([AbortSignal.timeout(this.idleTimeoutMs), halted.signal]) })
        } catch (err: any) {
          if (halted.signal.aborted) throw halted.signal.reason
          if (err.name === 'AbortError' || err.name === 'TimeoutError') {
            this.stats.sessionsEvicted++
            throw new RequestError(Status.INVALID_REQUEST, `session idle for ${this.idleTimeoutMs} ms: evicted`)
          }
          // remote closed its side: the session ends
          if (err.name === 'UnexpectedEOFError' || stream.readStatus !== 'readable') return
          throw err
        }
        this.stats.bytesIn += msg.byteLength + 2
        let req
        try {
          req = decodeRequest(msg)
        } catch (err: any) {
          throw new RequestError(Status.INVALID_REQUEST, `${err.name}: ${err.message}`)
        }
        const reason = this.haltReason()
        if (reason != null) throw new RequestError(Status.HALTED, `halted by governance: ${reason}`)

        if (req.type === 'close') {
          await stream.close({ signal: AbortSignal.timeout(this.writeTimeoutMs) })
          return
        }
        if (req.type === 'open') {
          if (session != null) throw new RequestError(Status.INVALID_REQUEST, 'session already open on this stream')
          if (req.protocolVersion !== INFER_PROTOCOL_VERSION) throw new RequestError(Status.INCOMPATIBLE, `protocol version ${req.protocolVersion} not supported (this expert speaks ${INFER_PROTOCOL_VERSION})`)
          if (!equals(req.tokenizerFingerprint, this.host.summary.fingerprint)) {
            throw new RequestError(Status.INCOMPATIBLE, `incompatible tokenizer: expert fingerprint ${Buffer.from(this.host.summary.fingerprint).toString('hex').slice(0, 16)}…`)
          }
          if (req.tokens.length >= this.host.contextSize - 1) {
            throw new RequestError(Status.CONTEXT_FULL, `prompt of ${req.tokens.length} tokens does not fit the context of ${this.host.contextSize}`)
          }
          try {
            session = this.host.openSession()
          } catch (err: any) {
            this.stats.sessionsRefused++
            throw new RequestError(Status.BUSY, err.message)
          }
          this.stats.sessionsOpened++
          const { frames, promptLogprob, promptScored } = await this.evaluate(session, req.tokens, req.draft, req.topK, halted.signal, { target: req.target, scorePrompt: req.scorePrompt })
          await write(encodeOpenResponse({
            frame: frames[0],
            modelName: this.host.summary.name,
            contextLength: this.host.contextSize,
            freeSlots: this.host.freeSlots,
            ...(promptLogprob !== undefined ? { promptLogprob, promptScored } : {})
          }))
          for (const f of frames.slice(1)) await write(encodeFrameResponse(f))
          this.stats.frames += frames.length
          continue
        }
        // step
        if (session == null) throw new RequestError(Status.INVALID_REQUEST, 'step before open')
        if (req.rollback != null && req.rollback > 0) {
          // erase rejected draft tokens; the context before the session's first token is not ours to erase
          if (req.rollback >= session.position) throw new RequestError(Status.INVALID_REQUEST, `rollback of ${req.rollback} tokens exceeds the session context (${session.position})`)
          await session.rollback(req.rollback)
        }
        const { frames } = await this.evaluate(session, req.tokens, req.draft, 256, halted.signal, { target: req.target })
        for (const f of frames) await write(encodeFrameResponse(f))
        this.stats.frames += frames.length
      }
    } catch (err: any) {
      if (err instanceof RequestError) {
        log('session ends: %s', err.message)
        try {
          await write(err.status === Status.HALTED ? encodeHaltedResponse(err.message, this.init.haltEnvelope?.()) : encodeErrorResponse(err.status, err.message))
          await stream.close({ signal: AbortSignal.timeout(this.writeTimeoutMs) })
        } catch (e: any) {
          stream.abort(e)
        }
      } else {
        log.error('session failed: %e', err)
        try {
          await write(encodeErrorResponse(Status.INTERNAL, String(err.message ?? err)))
          await stream.close({ signal: AbortSignal.timeout(1000) })
        } catch {
          stream.abort(err)
        }
      }
    } finally {
      this.live.delete(stream)
      if (session != null) {
        await this.inflight.get(session)
        this.inflight.delete(session)
        await session.close()
      }
    }
  }

  private async evaluate (session: ModelSession, tokens: Uint32Array, draft: Uint32Array | undefined, topK: number, halted: AbortSignal, opts: EvaluateOptions = {}): Promise<EvaluateResult> {
    const n = tokens.length + (draft?.length ?? 0)
    if (session.position + n > this.host.contextSize - 1) {
      throw new RequestError(Status.CONTEXT_FULL, `context full: ${session.position} + ${n} tokens exceed ${this.host.contextSize}`)
    }
    let timer: NodeJS.Timeout | undefined
    // the evaluation itself is awaited before the session is closed (a HALT or timeout wins
    // the race, but the KV sequence and samplers must not be freed under a running decode)
    const running = session.evaluateScored(tokens, draft ?? [], topK, opts)
    this.inflight.set(session, running.then(() => {}, () => {}))
    try {
      return await Promise.race([
        running,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new RequestError(Status.INTERNAL, `evaluation exceeded ${this.evalTimeoutMs} ms`)), this.evalTimeoutMs)
          halted.addEventListener('abort', () => reject(halted.reason), { once: true })
        })
      ])
    } finally {
      clearTimeout(timer)
    }
  }
}

export function inferService (init: InferServiceInit): (components: InferServiceComponents) => InferService {
  return (components) => new InferService(components, init)
}
