/**
 * /meshllm/generate/1.0.0: a client asks a mesh peer to route a generation for it
 * (`meshllm generate --via <multiaddr>`). Spec: protocols/generate.md.
 * Request: one GenerateRequest. Response: one GenerateEvent per token, then Done or Error.
 */
import type { ComponentLogger, Connection, Logger, Startable, Stream } from '@libp2p/interface'
import type { Registrar } from '@libp2p/interface-internal'
import { pbStream } from '@libp2p/utils'
import type { Multiaddr } from '@multiformats/multiaddr'
import { GenerateEvent, GenerateRequest } from './pb/generate.js'
import { resultSummary, type GenerateOptions, type GenerateResult, type Router, type TokenEvent } from './router.js'
import type { MeshNode } from '../node/node.js'
import type { AggregationRule } from '../aggregate/types.js'

export const GENERATE_PROTOCOL = '/meshllm/generate/1.0.0'
const MAX_REQUEST = 64 * 1024
const MAX_EVENT = 64 * 1024

export interface GenerateServiceComponents {
  registrar: Registrar
  logger: ComponentLogger
}

export interface GenerateServiceInit {
  router: () => Router | undefined
  /** longest generation a remote caller may run (ms) */
  timeoutMs?: number
  maxInboundStreams?: number
  maxTokens?: number
}

export class GenerateService implements Startable {
  private readonly log: Logger
  private started = false
  constructor (private readonly components: GenerateServiceComponents, private readonly init: GenerateServiceInit) {
    this.log = components.logger.forComponent('meshllm:generate')
    this.handle = this.handle.bind(this)
  }

  readonly [Symbol.toStringTag] = 'meshllm/generate'

  async start (): Promise<void> {
    await this.components.registrar.handle(GENERATE_PROTOCOL, this.handle, { maxInboundStreams: this.init.maxInboundStreams ?? 16, maxOutboundStreams: 16 })
    this.started = true
  }

  async stop (): Promise<void> {
    await this.components.registrar.unhandle(GENERATE_PROTOCOL)
    this.started = false
  }

  isStarted (): boolean { return this.started }

  private async handle (stream: Stream, _connection: Connection): Promise<void> {
    const signal = AbortSignal.timeout(this.init.timeoutMs ?? 300_000)
    const pb = pbStream(stream, { maxDataLength: MAX_REQUEST })
    try {
      const req = await pb.read(GenerateRequest, { signal })
      const router = this.init.router()
      const send = async (ev: Partial<GenerateEvent>): Promise<void> => { await pb.write(ev as GenerateEvent, GenerateEvent, { signal }) }
      if (router == null) {
        await send({ error: { name: 'NoExpertsError', message: 'this peer does not route' } })
      } else {
        try {
          const opts = parseGenerateRequest(req, this.init.maxTokens)
          const pending: Array<Promise<void>> = []
          const result = await router.generate(req.prompt, {
            ...opts,
            signal,
            onToken: (t: TokenEvent) => { pending.push(send({ token: { id: t.token, text: t.text, experts: t.experts } })) }
          })
          await Promise.all(pending)
          await send({ done: resultToDone(result) })
        } catch (err: any) {
          await send({ error: { name: err.name ?? 'Error', message: String(err.message ?? err) } })
        }
      }
      await stream.close({ signal })
    } catch (err: any) {
      this.log.error('generate stream failed: %e', err)
      stream.abort(err)
    }
  }
}

export function generateService (init: GenerateServiceInit): (c: GenerateServiceComponents) => GenerateService {
  return (c) => new GenerateService(c, init)
}

/** a GenerateRequest that decoded but asks for something out of range */
export class InvalidGenerateRequestError extends Error {
  static override name = 'InvalidGenerateRequestError'
  override name = 'InvalidGenerateRequestError'
}

/** most stop strings / characters per stop string a remote caller may give */
export const MAX_STOP_STRINGS = 16
export const MAX_STOP_LENGTH = 256

/**
 * Checks a decoded request and turns it into router options (protocols/generate.md):
 * every field a remote peer controls is range-checked here, before the router sees it.
 */
export function parseGenerateRequest (req: GenerateRequest, maxTokensLimit = 2048): GenerateOptions {
  const bad = (m: string): never => { throw new InvalidGenerateRequestError(m) }
  const rule = req.rule === '' ? 'mixture' : req.rule
  if (!['mixture', 'product', 'median', 'trimmed'].includes(rule)) bad(`unknown aggregation rule "${req.rule.slice(0, 32)}"`)
  if (req.prompt.length === 0) bad('empty prompt')
  if (!Number.isInteger(req.k) || req.k < 0 || req.k > 64) bad(`k ${req.k} outside [0, 64]`)
  if (!Number.isInteger(req.maxTokens) || req.maxTokens < 0) bad(`max_tokens ${req.maxTokens} is not a count`)
  if (!Number.isFinite(req.temperature) || req.temperature < 0 || req.temperature > 10) bad(`temperature ${req.temperature} outside [0, 10]`)
  if (!Number.isInteger(req.topK) || req.topK < 0 || req.topK > 256) bad(`top_k ${req.topK} outside [0, 256]`)
  if (!Number.isFinite(req.topP) || req.topP < 0 || req.topP > 1) bad(`top_p ${req.topP} outside [0, 1]`)
  if (req.stop.length > MAX_STOP_STRINGS) bad(`${req.stop.length} stop strings (at most ${MAX_STOP_STRINGS})`)
  if (req.stop.some(x => x.length > MAX_STOP_LENGTH)) bad(`a stop string longer than ${MAX_STOP_LENGTH} characters`)
  return {
    k: req.k > 0 ? req.k : undefined,
    maxTokens: Math.min(req.maxTokens > 0 ? req.maxTokens : 64, maxTokensLimit),
    temperature: req.temperature,
    topK: req.topK,
    topP: req.topP > 0 ? req.topP : 1,
    seed: req.hasSeed ? Number(req.seed & 0xffffffffn) : undefined,
    stop: req.stop,
    rule: rule as AggregationRule
  }
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

export interface GenerateViaOptions extends GenerateOptions {
  /** whole generation (ms, default 300 000) */
  timeoutMs?: number
  /** liveness: ping the routing peer this often while waiting (ms, default 2 000) */
  pingIntervalMs?: number
  /** …and give up after this long without any ping reply or event (ms, default 10 000) */
  unresponsiveMs?: number
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
  const signal = AbortSignal.any([AbortSignal.timeout(opts.timeoutMs ?? 300_000), liveness.signal, ...(opts.signal != null ? [opts.signal] : [])])
  const connection = await node.dial(via, { signal })
  const stream = await connection.newStream(GENERATE_PROTOCOL, { signal })
  const pb = pbStream(stream, { maxDataLength: MAX_EVENT })
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
      rule: opts.rule ?? 'mixture'
    }, GenerateRequest, { signal })
    let index = 0
    while (true) {
      let ev: GenerateEvent
      try {
        ev = await pb.read(GenerateEvent, { signal })
        lastSign = performance.now()
      } catch (err: any) {
        if (liveness.signal.aborted) throw liveness.signal.reason
        if (signal.aborted) throw err
        // the routing peer died, restarted or dropped the connection mid-generation
        throw new RoutingPeerClosedError(`the routing peer closed the stream before the generation ended (${index} token(s) received): ${err.message ?? err}`)
      }
      if (ev.token != null) {
        opts.onToken?.({ token: ev.token.id, text: ev.token.text, experts: ev.token.experts, index: index++ })
      } else if (ev.done != null) {
        const d = ev.done
        await stream.close({ signal }).catch(() => {})
        const elapsedMs = performance.now() - started
        return {
          text: d.text,
          tokens: d.tokens,
          promptTokens: d.promptTokens,
          elapsedMs,
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
  } catch (err: any) {
    stream.abort(err)
    throw err
  } finally {
    clearInterval(watchdog)
  }
}
