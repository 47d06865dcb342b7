/**
 * /meshllm/generate/1.0.0: a client asks a mesh peer to route a generation for it
 * (`meshllm generate --via <multiaddr>`). Spec: protocols/generate.md.
 * Request: one GenerateRequest. Response: one GenerateEvent per token, then Done or Error.
 */
import type { AbortOptions, ComponentLogger, Connection, Logger, Startable, Stream } from '@libp2p/interface'
import type { Registrar } from '@libp2p/interface-internal'
import { pbStream } from '@libp2p/utils'
import { readSecretFile } from '../util/secret-file.js'
import type { Multiaddr } from '@multiformats/multiaddr'
import { GenerateEvent, GenerateRequest } from './pb/generate.js'
import { resultSummary, type GenerateOptions, type GenerateResult, type Router, type TokenEvent } from './router.js'
import type { MeshNode } from '../node/node.js'
import { GENERATE_DEFAULTS, GENERATE_LIMITS, STOP_LIMITS, validateGenerateOptions } from './options.js'
import { streamLifetime } from '../util/stream-lifetime.js'
import { lengthPrefixOptions } from '../wire/length-prefix.js'
import { createHash, timingSafeEqual } from 'node:crypto'
import { errorMessage, errorName, asError } from '../util/errors.js'

export const GENERATE_PROTOCOL = '/meshllm/generate/1.0.0'
const MAX_REQUEST = 64 * 1024
const MAX_EVENT = 64 * 1024
/** largest K a remote caller may ask for, unless the service is configured otherwise */
export const DEFAULT_MAX_REMOTE_K = 8
/** concurrent generations one remote peer may run on this node, unless configured otherwise */
export const DEFAULT_MAX_STREAMS_PER_PEER = 2
/** token events queued for a client that does not read them fast enough, before it is dropped */
export const MAX_QUEUED_EVENTS = 256

export interface GenerateServiceComponents {
  /** libp2p's registrar, or a started node (its handle/unhandle are the registrar's) */
  registrar: Pick<Registrar, 'handle' | 'unhandle'>
  logger: ComponentLogger
}

export interface GenerateServiceInit {
  /** the router that runs remote callers' generations (only its generate is used); undefined: this peer does not route */
  router: () => Pick<Router, 'generate'> | undefined
  /** longest generation a remote caller may run (ms, default 300 000) */
  timeoutMs?: number
  /** a caller must send its request within this time after opening the stream (ms, default 10 000) */
  requestTimeoutMs?: number
  /** writing one event may take at most this long (a client that stops reading is dropped; ms, default 30 000) */
  writeTimeoutMs?: number
  /** libp2p's per-connection limit (default 16) */
  maxInboundStreams?: number
  /** a larger max_tokens is refused, InvalidGenerateOptionError (default 2048) */
  maxTokens?: number
  /** a remote caller's k above this is refused (default 8, at most 64) */
  maxK?: number
  /** concurrent generations per remote peer; more are answered TooManyGenerationsError (default 2) */
  maxStreamsPerPeer?: number
  /** when set, a request must carry this token (GenerateRequest.token), else GenerateUnauthorizedError */
  token?: string
}

export interface GenerateServiceStats {
  /** generations admitted */
  admitted: number
  /** streams refused: the peer already runs maxStreamsPerPeer generations */
  refusedBusy: number
  /** requests refused for a missing or wrong token */
  refusedToken: number
  /** handlers that ended because the client went away (closed, reset, stopped reading) */
  clientGone: number
}

/** the peer already runs as many generations on this node as it may */
export class TooManyGenerationsError extends Error {
  static override name = 'TooManyGenerationsError'
  override name = 'TooManyGenerationsError'
}

/** this node requires a routed-generation token and the request carried none or another */
export class GenerateUnauthorizedError extends Error {
  static override name = 'GenerateUnauthorizedError'
  override name = 'GenerateUnauthorizedError'
}

/** the client left MAX_QUEUED_EVENTS token events unread */
export class SlowClientError extends Error {
  static override name = 'SlowClientError'
  override name = 'SlowClientError'
}

/** a --generate-token file that cannot be used (missing, empty) */
export class GenerateTokenFileError extends Error {
  static override name = 'GenerateTokenFileError'
  override name = 'GenerateTokenFileError'
}

export class GenerateService implements Startable {
  private readonly log: Logger
  private started = false
  /** generations running per remote peer (entries only while > 0: bounded by live streams) */
  private readonly perPeer = new Map<string, number>()
  private readonly tokenDigest?: Buffer
  readonly stats: GenerateServiceStats = { admitted: 0, refusedBusy: 0, refusedToken: 0, clientGone: 0 }

  constructor (private readonly components: GenerateServiceComponents, private readonly init: GenerateServiceInit) {
    this.log = components.logger.forComponent('meshllm:generate')
    if (init.token != null) {
      if (init.token.length === 0) throw new GenerateTokenFileError('the routed-generation token is empty')
      this.tokenDigest = digest(init.token)
    }
    this.handle = this.handle.bind(this)
  }

  readonly [Symbol.toStringTag] = 'meshllm/generate'

  async start (): Promise<void> {
    // a routing peer behind NAT is reached through a relay: a limited connection
    await this.components.registrar.handle(GENERATE_PROTOCOL, this.handle, { maxInboundStreams: this.init.maxInboundStreams ?? 16, maxOutboundStreams: 16, runOnLimitedConnection: true })
    this.started = true
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(GENERATE_PROTOCOL)
    this.started = false
  }

  isStarted (): boolean { return this.started }

  /** generations running now, all peers together */
  get active (): number {
    let n = 0
    for (const v of this.perPeer.values()) n += v
    return n
  }

  /**
   * One stream. Everything it starts is tied to the stream's lifetime (streamLifetime: a
   * client that closes, resets or loses its connection aborts the generation) and to the
   * deadline; token events are written one at a time, in order, each awaited (a failed write
   * ends the generation); any failure aborts the stream. Nothing a client does can reject a
   * promise nobody awaits.
   */
  private async handle (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const lifetime = streamLifetime(stream)
    const signal = AbortSignal.any([AbortSignal.timeout(this.init.timeoutMs ?? 300_000), lifetime.signal])
    const writeTimeoutMs = this.init.writeTimeoutMs ?? 30_000
    const pb = pbStream(stream, lengthPrefixOptions(MAX_REQUEST))
    const send = async (ev: Partial<GenerateEvent>): Promise<void> => {
      const writeDeadline = AbortSignal.timeout(writeTimeoutMs)
      try {
        await pb.write(ev as GenerateEvent, GenerateEvent, { signal: AbortSignal.any([signal, writeDeadline]) })
      } catch (err) {
        // the client stopped reading: dropped like one that leaves MAX_QUEUED_EVENTS unread
        if (writeDeadline.aborted && !signal.aborted) throw new SlowClientError(`the client took no event for ${writeTimeoutMs} ms`)
        throw err
      }
    }
    const running = this.perPeer.get(peer) ?? 0
    const admitted = running < (this.init.maxStreamsPerPeer ?? DEFAULT_MAX_STREAMS_PER_PEER)
    if (admitted) {
      this.perPeer.set(peer, running + 1)
      this.stats.admitted++
    }
    try {
      if (!admitted) {
        this.stats.refusedBusy++
        await send({ error: { name: TooManyGenerationsError.name, message: `this peer already runs ${running} generation(s) here (at most ${this.init.maxStreamsPerPeer ?? DEFAULT_MAX_STREAMS_PER_PEER})` } })
      } else {
        const req = await pb.read(GenerateRequest, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.init.requestTimeoutMs ?? 10_000)]) })
        await this.answer(req, send, { signal, gone: lifetime.signal })
      }
      // not bounded by the generation's deadline: the error event of a generation past its
      // deadline is followed by a close, not a reset
      await stream.close({ signal: AbortSignal.any([lifetime.signal, AbortSignal.timeout(writeTimeoutMs)]) })
    } catch (err) {
      if (lifetime.signal.aborted || errorName(err) === SlowClientError.name) {
        this.stats.clientGone++
        this.log('generate client went away: %s', errorMessage(err))
      } else {
        this.log.error('generate stream failed: %e', err)
      }
      stream.abort(asError(err))
    } finally {
      lifetime.dispose()
      if (admitted) {
        const n = (this.perPeer.get(peer) ?? 1) - 1
        if (n <= 0) this.perPeer.delete(peer)
        else this.perPeer.set(peer, n)
      }
    }
  }

  /**
   * runs one request and writes its events; throws when the client cannot be told anything
   * more. `signal`: the generation's (deadline, client gone); `gone`: the client's stream ended
   */
  private async answer (req: GenerateRequest, send: (ev: Partial<GenerateEvent>) => Promise<void>, options: Required<AbortOptions> & { gone: AbortSignal }): Promise<void> {
    const { signal, gone } = options
    if (this.tokenDigest != null && !timingSafeEqual(digest(req.token ?? ''), this.tokenDigest)) {
      this.stats.refusedToken++
      await send({ error: { name: GenerateUnauthorizedError.name, message: 'this peer requires a routed-generation token (--generate-token): missing or wrong' } })
      return
    }
    const router = this.init.router()
    if (router == null) {
      await send({ error: { name: 'NoExpertsError', message: 'this peer does not route' } })
      return
    }
    // token events go out one at a time, in order; the first write that fails (client gone,
    // not reading) ends the generation through `stop`
    const stop = new AbortController()
    let chain: Promise<void> = Promise.resolve()
    let queued = 0
    let writeFailure: Error | undefined
    const fail = (err: any): void => {
      writeFailure ??= err instanceof Error ? err : new Error(String(err))
      stop.abort(writeFailure)
    }
    try {
      const opts = parseGenerateRequest(req, this.init.maxTokens, this.init.maxK)
      const result = await router.generate(req.prompt, {
        ...opts,
        signal: AbortSignal.any([signal, stop.signal]),
        onToken: (t: TokenEvent) => {
          if (writeFailure != null) return
          if (queued >= MAX_QUEUED_EVENTS) { fail(new SlowClientError(`${queued} token events unread`)); return }
          queued++
          const ev = { token: { id: t.token, text: t.text, experts: t.experts } }
          chain = chain.then(async () => { if (writeFailure == null) await send(ev) }).then(() => { queued-- }, fail)
        }
      })
      await chain
      if (writeFailure != null) throw writeFailure
      await send({ done: resultToDone(result) })
    } catch (err) {
      await chain // never rejects: failures went to `fail`
      // the client is gone or stopped reading: there is no one to tell
      if (writeFailure != null) throw writeFailure
      if (gone.aborted) throw gone.reason
      await send({ error: { name: errorName(err) ?? 'Error', message: errorMessage(err) } })
    }
  }
}

function digest (token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/**
 * The routed-generation token of `join --generate-token <file>` / `generate --generate-token
 * <file>`, else of $MESHLLM_GENERATE_TOKEN; undefined when neither is given. Never taken from
 * argv itself (it would show in `ps`). Surrounding whitespace is ignored.
 */
export async function generateTokenFrom (file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  let token: string | undefined
  if (file != null) {
    // the same rules as --api-token-file: a regular file only its owner can read (chmod 600)
    token = readSecretFile(file, '--generate-token', GenerateTokenFileError, true).toString('utf8').split(/\r?\n/, 1)[0].trim()
    if (token.length === 0) throw new GenerateTokenFileError(`--generate-token ${file}: the first line is empty`)
    return token
  }
  token = env.MESHLLM_GENERATE_TOKEN?.trim()
  return token != null && token.length > 0 ? token : undefined
}

export function generateService (init: GenerateServiceInit): (c: GenerateServiceComponents) => GenerateService {
  return (c) => new GenerateService(c, init)
}

/** a GenerateRequest that decoded but asks for something out of range */
export class InvalidGenerateRequestError extends Error {
  static override name = 'InvalidGenerateRequestError'
  override name = 'InvalidGenerateRequestError'
}

/** most stop strings / characters per stop string a remote caller may give (the schema's: STOP_LIMITS) */
export const MAX_STOP_STRINGS = STOP_LIMITS.count
export const MAX_STOP_LENGTH = STOP_LIMITS.length

/**
 * Checks a decoded request and turns it into router options (protocols/generate.md): every
 * field a remote peer controls is checked here, before the router sees it. The options go
 * through the schema every interface shares (src/router/options.ts: InvalidGenerateOptionError,
 * max_tokens bounded by this peer's limit); what only this protocol has (an empty prompt, the
 * remote K limit) is InvalidGenerateRequestError.
 */
export function parseGenerateRequest (req: GenerateRequest, maxTokensLimit = 2048, maxK = DEFAULT_MAX_REMOTE_K): GenerateOptions {
  const bad = (m: string): never => { throw new InvalidGenerateRequestError(m) }
  // proto3 encoding: k 0 and max_tokens 0 = the default, top_p 0 = 1 (off), seed only with has_seed
  const v = validateGenerateOptions({
    k: req.k === 0 ? undefined : req.k,
    maxTokens: req.maxTokens === 0 ? undefined : req.maxTokens,
    temperature: req.temperature,
    topK: req.topK,
    topP: req.topP === 0 ? 1 : req.topP,
    seed: req.hasSeed ? Number(req.seed & 0xffffffffn) : undefined,
    stop: req.stop,
    rule: req.rule === '' ? undefined : req.rule
  }, { maxTokens: maxTokensLimit })
  if (req.prompt.length === 0) bad('empty prompt')
  const kLimit = Math.min(maxK, GENERATE_LIMITS.k[1])
  if (v.k != null && v.k > kLimit) bad(`k ${v.k} outside [0, ${kLimit}]`)
  return { ...v, maxTokens: v.maxTokens ?? Math.min(GENERATE_DEFAULTS.maxTokens, maxTokensLimit), rule: v.rule ?? GENERATE_DEFAULTS.rule }
}

function resultToDone (r: GenerateResult): GenerateEvent['done'] {
  return resultSummary(r)
}

export class RemoteGenerateError extends Error {
  static override name = 'RemoteGenerateError'
  override name = 'RemoteGenerateError'
  constructor (readonly remoteName: string, message: string) { super(message) }
}

/** `--via`: the routing peer went away (stream reset or closed) before Done or Error. */
export class RoutingPeerClosedError extends Error {
  static override name = 'RoutingPeerClosedError'
  override name = 'RoutingPeerClosedError'
}

/** `--via`: the routing peer's connection is open but it answers no ping (frozen, overloaded). */
export class RoutingPeerUnresponsiveError extends Error {
  static override name = 'RoutingPeerUnresponsiveError'
  override name = 'RoutingPeerUnresponsiveError'
}

/** the whole `--via` generation's bound when the caller gives no signal (ms) */
export const DEFAULT_VIA_MS = 300_000

export interface GenerateViaOptions extends GenerateOptions {
  /** liveness: ping the routing peer this often while waiting (ms, default 2 000) */
  pingIntervalMs?: number
  /** …and give up after this long without any ping reply or event (ms, default 10 000) */
  unresponsiveMs?: number
  /** the routing peer's routed-generation token, when it requires one (generateTokenFrom) */
  token?: string
}

/**
 * Client side: asks the peer at `via` to route a generation; streams tokens to onToken.
 * A routing peer that dies resets the stream (RoutingPeerClosedError); one that freezes
 * (SIGSTOP, a wedged event loop) keeps its TCP connection open, so the client pings it
 * while it waits and ends with RoutingPeerUnresponsiveError once neither a ping reply nor
 * an event arrived for `unresponsiveMs`: a slow but live router is waited for.
 */
export async function generateVia (node: MeshNode, via: Multiaddr, prompt: string, opts: GenerateViaOptions): Promise<GenerateResult> {
  const started = performance.now()
  const unresponsiveMs = opts.unresponsiveMs ?? 10_000
  const pingIntervalMs = opts.pingIntervalMs ?? 2_000
  const liveness = new AbortController()
  // the caller's signal bounds the whole generation (default: DEFAULT_VIA_MS)
  const signal = AbortSignal.any([opts.signal ?? AbortSignal.timeout(DEFAULT_VIA_MS), liveness.signal])
  const connection = await node.dial(via, { signal })
  const stream = await connection.newStream(GENERATE_PROTOCOL, { signal, runOnLimitedConnection: true })
  const pb = pbStream(stream, lengthPrefixOptions(MAX_EVENT))
  let lastSign = performance.now()
  const peer = connection.remotePeer
  let pinging = false
  const watchdog = setInterval(() => {
    if (performance.now() - lastSign > unresponsiveMs) {
      liveness.abort(new RoutingPeerUnresponsiveError(`the routing peer stopped responding: no event and no ping reply for ${Math.round(unresponsiveMs / 1000)} s`))
      return
    }
    if (pinging) return
    pinging = true
    const ping = (node.services as any).ping
    ping.ping(peer, { signal: AbortSignal.any([signal, AbortSignal.timeout(unresponsiveMs)]) })
      .then(() => { lastSign = performance.now() }, () => {})
      .finally(() => { pinging = false })
  }, Math.min(pingIntervalMs, unresponsiveMs / 2))
  try {
    await pb.write({
      prompt,
      k: opts.k ?? 3,
      maxTokens: opts.maxTokens ?? 64,
      temperature: opts.temperature ?? 0.8,
      topK: opts.topK ?? 0,
      topP: opts.topP ?? 0.95,
      seed: BigInt(opts.seed ?? 0),
      hasSeed: opts.seed != null,
      stop: opts.stop ?? [],
      rule: opts.rule ?? 'mixture',
      ...(opts.token != null ? { token: opts.token } : {})
    }, GenerateRequest, { signal })
    let index = 0
    let firstTokenAt: number | undefined
    const tokenIds: number[] = []
    while (true) {
      let ev: GenerateEvent
      try {
        ev = await pb.read(GenerateEvent, { signal })
        lastSign = performance.now()
      } catch (err) {
        if (liveness.signal.aborted) throw liveness.signal.reason
        if (signal.aborted) throw err
        // the routing peer died, restarted or dropped the connection mid-generation
        throw new RoutingPeerClosedError(`the routing peer closed the stream before the generation ended (${index} token(s) received): ${errorMessage(err)}`)
      }
      if (ev.token != null) {
        firstTokenAt ??= performance.now()
        tokenIds.push(ev.token.id)
        opts.onToken?.({ token: ev.token.id, text: ev.token.text, experts: ev.token.experts, index: index++ })
      } else if (ev.done != null) {
        const d = ev.done
        await stream.close({ signal }).catch(() => {})
        const elapsedMs = performance.now() - started
        return {
          text: d.text,
          tokens: d.tokens,
          tokenIds,
          promptTokens: d.promptTokens,
          elapsedMs,
          // this client's own: its dial and the routing peer's work included
          ...(firstTokenAt !== undefined ? { ttftMs: firstTokenAt - started } : {}),
          tokensPerSecond: d.tokens / (elapsedMs / 1000),
          k: d.k,
          effectiveK: d.effectiveK,
          experts: d.experts,
          bytesPerExpertToken: d.bytesPerExpertToken,
          finishReason: d.finishReason as GenerateResult['finishReason'],
          steps: [],
          warnings: d.warnings
        }
      } else if (ev.error != null) {
        await stream.close({ signal }).catch(() => {})
        throw new RemoteGenerateError(ev.error.name, ev.error.message)
      } else {
        throw new Error('empty generate event')
      }
    }
  } catch (err) {
    stream.abort(asError(err))
    throw err
  } finally {
    clearInterval(watchdog)
  }
}
