/**
 * The expert side of /meshllm/infer/1.0.0 (spec: protocols/infer.md), shaped like
 * js-libp2p's protocol services: explicit Components/Init, start/stop registering the
 * handler with stream limits, a deadline on every read and write, stream.abort on failure.
 * An expert serves and never routes.
 */
import type { AbortOptions, ComponentLogger, Connection, Logger, PeerId, Startable, Stream } from '@libp2p/interface'
import type { Registrar } from '@libp2p/interface-internal'
import { lpStream, streamPair } from '@libp2p/utils'
import { equals } from 'uint8arrays/equals'
import { INFER_PROTOCOL, INFER_PROTOCOL_VERSION, MAX_DRAFT_TOKENS, MAX_REQUEST_BYTES, Status } from '../wire/types.js'
import type { FrameEncoding } from '../wire/frame.js'
import { decodeRequest, encodeErrorResponse, encodeFrameResponse, encodeHaltedResponse, encodeOpenResponse } from '../wire/infer-codec.js'
import type { EvaluateOptions, EvaluateResult, ModelSession } from './model-host.js'
import type { GgufSummary } from './tokenizer.js'
import { streamLifetime } from '../util/stream-lifetime.js'
import { lengthPrefixOptions } from '../wire/length-prefix.js'
import { errorMessage, errorName, asError, BusyError } from '../util/errors.js'
import { QueueFullError, QueueTimeoutError, SlotQueue } from './slot-queue.js'

/** sessions one remote peer may hold on this expert at once, unless configured otherwise */
export const DEFAULT_MAX_SESSIONS_PER_PEER = 2
/** a session ends (BUSY) once it is this old, unless configured otherwise (ms) */
export const DEFAULT_MAX_SESSION_MS = 30 * 60_000
/** how long an open waits for a session slot before it is answered BUSY, unless configured otherwise (ms) */
export const DEFAULT_QUEUE_TIMEOUT_MS = 10_000

/** lpStream's errors for a length prefix the limits refuse (protocols/infer.md §1: INVALID_REQUEST, then close) */
const LENGTH_ERRORS = new Set(['InvalidDataLengthError', 'InvalidDataLengthLengthError', 'InvalidMessageLengthError'])

export interface InferServiceComponents {
  /** libp2p's registrar, or a started node (its handle/unhandle are the registrar's) */
  registrar: Pick<Registrar, 'handle' | 'unhandle'>
  logger: ComponentLogger
  /** this node's own identity: the remote peer of its in-process sessions (openLocal) */
  peerId?: PeerId
}

/** openLocal() on a service that was given no peerId, or is not started */
export class LocalSessionUnavailableError extends Error {
  static override name = 'LocalSessionUnavailableError'
  override name = 'LocalSessionUnavailableError'
}

/** what the service uses of a session: a ModelSession (a deterministic fake in unit tests) */
export type InferSession = Pick<ModelSession, 'position' | 'evaluateScored' | 'rollback' | 'close'>

/** what the service uses of the model: a ModelHost (a deterministic fake in unit tests) */
export interface InferHost {
  readonly summary: Pick<GgufSummary, 'name' | 'fingerprint'>
  readonly contextSize: number
  readonly maxSessions: number
  readonly freeSlots: number
  /** claims a session slot; throws (BusyError) when none is free */
  openSession: () => InferSession
}

export interface InferServiceInit {
  /** the model: a ModelHost */
  host: InferHost
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
  /**
   * sessions one remote peer is sure of (default 2). It may hold more only while slots would
   * otherwise sit idle (no other peer's Open waits); those borrowed sessions, newest first,
   * are ended with BUSY when another peer below its quota needs a slot
   */
  maxSessionsPerPeer?: number
  /**
   * tokens one session may evaluate in all, rolled-back ones included; more is refused with
   * CONTEXT_FULL (default (MAX_DRAFT_TOKENS + 1) × context size: more than any honest
   * session, speculative ones included, can use)
   */
  maxSessionTokens?: number
  /** a session older than this is ended with BUSY at its next request (ms, default 30 min) */
  maxSessionMs?: number
  /**
   * how long an open that finds every slot in use (or its peer at maxSessionsPerPeer) waits
   * for one before it is answered BUSY (ms, default 10 s; 0: BUSY at once, no queue)
   */
  queueTimeoutMs?: number
  /** opens waiting for a slot in all; more are answered BUSY at once (default 8 × the host's maxSessions) */
  maxQueued?: number
  /** opens one remote peer may have waiting; more are answered BUSY at once (default 4 × maxSessionsPerPeer) */
  maxQueuedPerPeer?: number
}

export interface InferServiceStats {
  sessionsOpened: number
  sessionsRefused: number
  /** of sessionsRefused: the peer already held maxSessionsPerPeer sessions */
  sessionsRefusedPerPeer: number
  /** sessions admitted beyond their peer's quota on idle slots */
  sessionsBorrowed: number
  /** borrowed sessions ended (BUSY) because another peer below its quota needed the slot */
  sessionsPreempted: number
  sessionsEvicted: number
  /** opens that waited for a slot (admitted, timed out or gone) */
  sessionsQueued: number
  /** of sessionsQueued: admitted once a slot freed */
  sessionsAdmittedAfterWait: number
  /** milliseconds the admitted ones waited, in all */
  queueWaitMs: number
  /** sessions that ended because the router went away (stream closed or reset) */
  sessionsGone: number
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
  private readonly host: InferHost
  private readonly log: Logger
  private readonly idleTimeoutMs: number
  private readonly writeTimeoutMs: number
  private readonly evalTimeoutMs: number
  private readonly haltReason: () => string | undefined
  private readonly maxSessionsPerPeer: number
  private readonly maxSessionTokens: number
  private readonly maxSessionMs: number
  /** open streams, each with the controller its session's HALT aborts (kept here, not on libp2p's Stream) */
  private readonly live = new Map<Stream, AbortController>()
  /** open sessions per remote peer (entries only while > 0: bounded by maxSessions) */
  private readonly sessionsByPeer = new Map<string, number>()
  /** evaluations still running per session (awaited before the session is freed) */
  private readonly inflight = new Map<InferSession, Promise<void>>()
  /** opens waiting for a slot */
  private readonly queue: SlotQueue
  /** sessions on borrowed slots (beyond their peer's quota), oldest first: each one's end */
  private readonly borrowed: Array<{ peer: string, end: AbortController }> = []
  private started = false
  readonly stats: InferServiceStats

  constructor (components: InferServiceComponents, private readonly init: InferServiceInit) {
    this.components = components
    this.host = init.host
    this.log = components.logger.forComponent('meshllm:expert:infer')
    this.idleTimeoutMs = init.idleTimeoutMs ?? 60_000
    this.writeTimeoutMs = init.writeTimeoutMs ?? 10_000
    this.evalTimeoutMs = init.evalTimeoutMs ?? 30_000
    this.haltReason = init.haltReason ?? (() => undefined)
    this.maxSessionsPerPeer = Math.max(1, init.maxSessionsPerPeer ?? DEFAULT_MAX_SESSIONS_PER_PEER)
    this.maxSessionTokens = init.maxSessionTokens ?? (MAX_DRAFT_TOKENS + 1) * this.host.contextSize
    this.maxSessionMs = init.maxSessionMs ?? DEFAULT_MAX_SESSION_MS
    const queueTimeoutMs = init.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS
    this.queue = new SlotQueue({
      timeoutMs: queueTimeoutMs,
      maxQueued: queueTimeoutMs > 0 ? init.maxQueued ?? 8 * this.host.maxSessions : 0,
      maxQueuedPerPeer: init.maxQueuedPerPeer ?? 4 * this.maxSessionsPerPeer
    })
    // the queue's counts are read from the queue, never copied
    const queued = this.queue.stats
    this.stats = {
      sessionsOpened: 0,
      sessionsRefused: 0,
      sessionsRefusedPerPeer: 0,
      sessionsBorrowed: 0,
      sessionsPreempted: 0,
      sessionsEvicted: 0,
      get sessionsQueued () { return queued.queued },
      get sessionsAdmittedAfterWait () { return queued.admitted },
      get queueWaitMs () { return queued.waitedMs },
      sessionsGone: 0,
      frames: 0,
      bytesOut: 0,
      bytesIn: 0
    }
    this.handle = this.handle.bind(this)
  }

  readonly [Symbol.toStringTag] = 'meshllm/infer'

  async start (): Promise<void> {
    await this.components.registrar.handle(this.protocol, this.handle, {
      // beyond the sessions one peer may hold (every slot, borrowed) and the opens it may have
      // waiting, so a burst of refusals is answered with BUSY (a refused stream is answered
      // and closed at once) instead of being reset by libp2p
      maxInboundStreams: Math.max(64, this.host.maxSessions * 2 + 8, this.host.maxSessions + this.queue.limits.maxQueuedPerPeer + 8),
      // a routing component in the same node opens outbound infer streams
      maxOutboundStreams: 256,
      // an expert behind NAT is reached through a mesh relay: a limited connection
      runOnLimitedConnection: true
    })
    this.started = true
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(this.protocol)
    this.queue.clear(new Error('expert shutting down'))
    for (const s of this.live.keys()) s.abort(new Error('expert shutting down'))
    this.live.clear()
    this.started = false
  }

  isStarted (): boolean {
    return this.started
  }

  /**
   * An in-process /meshllm/infer stream to this expert, for the node's own router: no dial,
   * the same protocol and the same handler (HALT, budgets, timeouts, stream-bound work) over
   * an in-memory stream pair (@libp2p/utils streamPair). Its sessions count against the
   * model's session slots but not against the per-peer quota, which is for remote peers.
   */
  async openLocal (options: AbortOptions = {}): Promise<Stream> {
    const self = this.components.peerId
    if (self == null || !this.started) throw new LocalSessionUnavailableError(self == null ? 'this infer service was given no peerId' : 'the infer service is not started')
    options.signal?.throwIfAborted()
    const [outbound, inbound] = await streamPair({ protocol: this.protocol })
    const connection = { remotePeer: self } as unknown as Connection
    this.handle(inbound, connection, true).catch((err: Error) => { this.log.error('local session failed: %e', err); inbound.abort(err) })
    return outbound
  }

  /** Ends every open session with HALTED (called by governance on a valid HALT). */
  haltAll (reason: string): void {
    for (const halted of this.live.values()) halted.abort(new RequestError(Status.HALTED, `halted by governance: ${reason}`))
  }

  /**
   * One stream, at most one session. Its work is tied to the stream's lifetime: a router
   * that closes, resets or loses its connection ends the wait for its next request and the
   * evaluation in flight (the KV sequence is freed once the decode returns); every write is
   * awaited, and a failed one aborts the stream.
   */
  private async handle (stream: Stream, connection: Connection, local = false): Promise<void> {
    const peer = connection.remotePeer.toString()
    const log = this.log.newScope?.(peer.slice(-6)) ?? this.log
    const lp = lpStream(stream, lengthPrefixOptions(MAX_REQUEST_BYTES))
    let session: InferSession | undefined
    /** tokens this session evaluated so far, rolled-back ones included */
    let evaluated = 0
    let openedAt = 0
    /** how this session's frames are written: compact when its Open asked for it */
    let encoding: FrameEncoding = 'full'
    const lifetime = streamLifetime(stream)
    const halted = new AbortController()
    this.live.set(stream, halted)
    /** a HALT or the router going away ends whatever the session is doing */
    const stop = AbortSignal.any([halted.signal, lifetime.signal])
    const write = async (bytes: Uint8Array): Promise<void> => {
      this.stats.bytesOut += bytes.byteLength + 2
      await lp.write(bytes, { signal: AbortSignal.any([AbortSignal.timeout(this.writeTimeoutMs), lifetime.signal]) })
    }
    /** refuses `n` more tokens past the session's budget (rollback cannot make a session immortal) */
    const charge = (n: number): void => {
      if (evaluated + n > this.maxSessionTokens) throw new RequestError(Status.CONTEXT_FULL, `session budget: ${evaluated} + ${n} tokens evaluated exceed ${this.maxSessionTokens}`)
      evaluated += n
    }
    try {
      while (true) {
        let msg
        try {
          msg = await lp.read({ signal: AbortSignal.any([AbortSignal.timeout(this.idleTimeoutMs), stop]) })
        } catch (err) {
          if (halted.signal.aborted) throw halted.signal.reason
          if (lifetime.signal.aborted) throw lifetime.signal.reason
          if (errorName(err) === 'AbortError' || errorName(err) === 'TimeoutError') {
            this.stats.sessionsEvicted++
            throw new RequestError(Status.INVALID_REQUEST, `session idle for ${this.idleTimeoutMs} ms: evicted`)
          }
          // a length prefix over the limit, refused before its body is read
          if (LENGTH_ERRORS.has(errorName(err) ?? '')) throw new RequestError(Status.INVALID_REQUEST, `${errorName(err)}: ${errorMessage(err)}`)
          // remote closed its side (possibly mid-request): the session ends, and so does our side
          if (errorName(err) === 'UnexpectedEOFError' || stream.readStatus !== 'readable') {
            await stream.close({ signal: AbortSignal.timeout(this.writeTimeoutMs) }).catch((e: Error) => { stream.abort(asError(e)) })
            return
          }
          throw err
        }
        this.stats.bytesIn += msg.byteLength + 2
        let req
        try {
          req = decodeRequest(msg)
        } catch (err) {
          throw new RequestError(Status.INVALID_REQUEST, `${errorName(err)}: ${errorMessage(err)}`)
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
          // a free slot within the peer's quota now (or an idle one borrowed beyond it), else a
          // wait in the queue (BUSY when it is full or no slot frees in time); a HALT or the
          // router leaving ends the wait
          let borrowing = false
          const tryAcquire = (): InferSession | undefined => {
            const held = this.sessionsByPeer.get(peer) ?? 0
            const over = !local && held >= this.maxSessionsPerPeer
            // beyond the quota only on a slot nobody else is waiting for, and only with a queue
            // (without one, a peer below its quota could not wait for a borrowed slot's return)
            if (over && (this.queue.limits.maxQueued === 0 || this.queue.waitingOthers(peer) > 0)) return undefined
            if (this.host.freeSlots <= 0) return undefined
            let s: InferSession
            try {
              s = this.host.openSession()
            } catch (err) {
              if (err instanceof BusyError) return undefined
              throw err
            }
            this.sessionsByPeer.set(peer, held + 1)
            borrowing = over
            return s
          }
          // waiting below its quota: a borrowed session gives its slot back
          const onQueued = (): void => {
            if (local || (this.sessionsByPeer.get(peer) ?? 0) < this.maxSessionsPerPeer) this.preemptBorrowed()
          }
          try {
            session = await this.queue.acquire(peer, tryAcquire, stop, onQueued)
          } catch (err) {
            if (err instanceof QueueFullError || err instanceof QueueTimeoutError) {
              this.stats.sessionsRefused++
              const held = this.sessionsByPeer.get(peer) ?? 0
              const perPeer = !local && held >= this.maxSessionsPerPeer
              if (perPeer) this.stats.sessionsRefusedPerPeer++
              throw new RequestError(Status.BUSY, perPeer
                ? `this peer already holds ${held} session(s) here (at most ${this.maxSessionsPerPeer} per peer): ${err.message}`
                : `all ${this.host.maxSessions} session slots are in use: ${err.message}`)
            }
            throw err
          }
          if (borrowing) {
            this.stats.sessionsBorrowed++
            this.borrowed.push({ peer, end: halted })
          }
          openedAt = Date.now()
          this.stats.sessionsOpened++
          charge(req.tokens.length + (req.draft?.length ?? 0))
          const { frames, promptLogprob, promptScored } = await this.evaluate(session, req.tokens, req.draft, req.topK, stop, { target: req.target, scorePrompt: req.scorePrompt })
          // the router reads compact frames: every frame of this session goes compact (≈ 30 % fewer bytes)
          if (req.compactFrames === true) encoding = 'compact'
          await write(encodeOpenResponse({
            frame: frames[0],
            modelName: this.host.summary.name,
            contextLength: this.host.contextSize,
            freeSlots: this.host.freeSlots,
            ...(promptLogprob !== undefined ? { promptLogprob, promptScored } : {})
          }, encoding))
          for (const f of frames.slice(1)) await write(encodeFrameResponse(f, encoding))
          this.stats.frames += frames.length
          continue
        }
        // step
        if (session == null) throw new RequestError(Status.INVALID_REQUEST, 'step before open')
        if (Date.now() - openedAt > this.maxSessionMs) throw new RequestError(Status.BUSY, `session lifetime of ${this.maxSessionMs} ms reached: open a new session`)
        charge(req.tokens.length + (req.draft?.length ?? 0))
        if (req.rollback != null && req.rollback > 0) {
          // erase rejected draft tokens; the context before the session's first token is not ours to erase
          if (req.rollback >= session.position) throw new RequestError(Status.INVALID_REQUEST, `rollback of ${req.rollback} tokens exceeds the session context (${session.position})`)
          await session.rollback(req.rollback)
          // a HALT (or the router leaving) during the rollback: no further frame
          if (stop.aborted) throw stop.reason
        }
        const { frames } = await this.evaluate(session, req.tokens, req.draft, 256, stop, { target: req.target })
        for (const f of frames) await write(encodeFrameResponse(f, encoding))
        this.stats.frames += frames.length
      }
    } catch (err) {
      if (lifetime.signal.aborted && !halted.signal.aborted) {
        // the router went away: nobody to answer
        this.stats.sessionsGone++
        log('session ends: the router went away')
        stream.abort(asError(err))
      } else if (err instanceof RequestError) {
        log('session ends: %s', err.message)
        try {
          await write(err.status === Status.HALTED ? encodeHaltedResponse(err.message, this.init.haltEnvelope?.()) : encodeErrorResponse(err.status, err.message))
          await stream.close({ signal: AbortSignal.timeout(this.writeTimeoutMs) })
        } catch (e) {
          stream.abort(asError(e))
        }
      } else {
        log.error('session failed: %e', err)
        try {
          await write(encodeErrorResponse(Status.INTERNAL, errorMessage(err)))
          await stream.close({ signal: AbortSignal.timeout(1000) })
        } catch {
          stream.abort(asError(err))
        }
      }
    } finally {
      lifetime.dispose()
      this.live.delete(stream)
      const b = this.borrowed.findIndex(x => x.end === halted)
      if (b >= 0) this.borrowed.splice(b, 1)
      if (session != null) {
        const n = (this.sessionsByPeer.get(peer) ?? 1) - 1
        if (n <= 0) this.sessionsByPeer.delete(peer)
        else this.sessionsByPeer.set(peer, n)
        await this.inflight.get(session)
        this.inflight.delete(session)
        try {
          await session.close()
        } finally {
          // a slot (and this peer's quota) is free: the earliest open that may take it does
          this.queue.wake()
        }
      }
    }
  }

  /**
   * Ends the newest session on a borrowed slot (BUSY: its router opens a new one later or
   * goes on with its other experts): a peer below its quota needs the slot. One per call;
   * the slot is free once that session's evaluation in flight returns.
   */
  private preemptBorrowed (): void {
    for (let i = this.borrowed.length - 1; i >= 0; i--) {
      const b = this.borrowed[i]
      if (b.end.signal.aborted) continue
      this.stats.sessionsPreempted++
      this.log('ending a borrowed session of %s: a peer below its quota needs the slot', b.peer)
      b.end.abort(new RequestError(Status.BUSY, `this session ran on an idle slot beyond this peer's ${this.maxSessionsPerPeer} and another peer needs it: open a new session later`))
      return
    }
  }

  /** opens waiting for a session slot now */
  get queued (): number {
    return this.queue.length
  }

  /** sessions `peer` (a peer id string) holds here now */
  sessionsOf (peer: string): number {
    return this.sessionsByPeer.get(peer) ?? 0
  }

  /** evaluates one request; `stop` (a HALT, the router leaving) ends the wait with its reason */
  private async evaluate (session: InferSession, tokens: Uint32Array, draft: Uint32Array | undefined, topK: number, stop: AbortSignal, opts: EvaluateOptions = {}): Promise<EvaluateResult> {
    const n = tokens.length + (draft?.length ?? 0)
    if (session.position + n > this.host.contextSize - 1) {
      throw new RequestError(Status.CONTEXT_FULL, `context full: ${session.position} + ${n} tokens exceed ${this.host.contextSize}`)
    }
    // an 'abort' listener added after the abort would never fire
    if (stop.aborted) throw stop.reason
    let timer: NodeJS.Timeout | undefined
    let onStop: (() => void) | undefined
    // the evaluation itself is awaited before the session is closed (a HALT or timeout wins
    // the race, but the KV sequence and samplers must not be freed under a running decode)
    const running = session.evaluateScored(tokens, draft ?? [], topK, opts)
    this.inflight.set(session, running.then(() => {}, () => {}))
    try {
      const result = await Promise.race([
        running,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new RequestError(Status.INTERNAL, `evaluation exceeded ${this.evalTimeoutMs} ms`)), this.evalTimeoutMs)
          onStop = () => reject(stop.reason)
          stop.addEventListener('abort', onStop, { once: true })
        })
      ])
      if (stop.aborted) throw stop.reason
      return result
    } finally {
      clearTimeout(timer)
      // one listener per request on a signal that lives as long as the stream: remove it
      if (onStop != null) stop.removeEventListener('abort', onStop)
    }
  }
}

export function inferService (init: InferServiceInit): (components: InferServiceComponents) => InferService {
  return (components) => new InferService(components, init)
}
