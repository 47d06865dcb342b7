/**
 * Governance on a node: the gossipsub topic of the mesh with a validator that checks every
 * message against the keyholders (Reject, never throw: senders of forgeries are penalised by
 * gossipsub's peer scoring), catch-up from peers over /meshllm/gov-sync/1.0.0 when joining or
 * reconnecting, and the hooks that stop inference on a valid HALT.
 *
 * Authority comes only from keyholder signatures inside the payload; gossipsub's own
 * signature only tells which peer published.
 */
import {
  serviceCapabilities, type AbortOptions, type ComponentLogger, type Logger, type PeerId, type PeerStore, type Stream, type Connection, type Startable,
  type TypedEventTarget, type Libp2pEvents, type IdentifyResult
} from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import type { GossipSub, TopicValidatorResult, Message as PubsubMessage } from '@libp2p/gossipsub'
import { lpStream } from '@libp2p/utils'
import type { MeshNode } from '../node/node.js'
import { Kind, MAX_ENVELOPE_BYTES, decodeEnvelope, type RefusalCode } from './envelope.js'
import { GovernanceState, type ApplyResult, type GovernanceSnapshot } from './state.js'
import { streamLifetime } from '../util/stream-lifetime.js'
import { Strikes } from '../node/blocklist.js'
import { GOVERNANCE_TOPIC_SCORE, GossipsubInternalsChangedError, scoreTopic } from './gossip-score.js'
import { RateLimitedError, RateLimiter, addressKey } from '../util/rate-limit.js'
import { errorMessage, errorName } from '../util/errors.js'
import { lengthPrefixOptions } from '../wire/length-prefix.js'
import { streamTo } from '../node/reach.js'
import { GOVERNANCE_RESYNC_MS } from '../node/periodic.js'

export { GOVERNANCE_TOPIC_SCORE, GossipsubInternalsChangedError, scoreTopic, RateLimitedError, addressKey }

export const GOV_SYNC_PROTOCOL = '/meshllm/gov-sync/1.0.0'
/** a keyholder tool (or any node) hands one signed envelope to a peer and learns its verdict */
export const GOV_PUSH_PROTOCOL = '/meshllm/gov-push/1.0.0'
export const govTopic = (meshId: string): string => `/meshllm/gov/${meshId}/1`

// gossipsub's TopicValidatorResult values (a string enum), without loading gossipsub for them
const ACCEPT = 'accept' as TopicValidatorResult
const REJECT = 'reject' as TopicValidatorResult
const IGNORE = 'ignore' as TopicValidatorResult

/** refusals that prove the sender forged or mangled something (gossipsub Reject: penalised) */
export const FORGERY_CODES: ReadonlySet<RefusalCode> = new Set<RefusalCode>([
  'malformed', 'mesh', 'lifetime', 'not-keyholder', 'threshold', 'bad-signature', 'unsafe-thresholds'
])
/** a catch-up from one peer ends after this many forgeries in its answer */
const MAX_SYNC_FORGERIES = 4
/** per remote address: at most this many catch-ups served per window */
const SYNC_RATE = { perWindow: 16, windowMs: 10_000 }
/** catch-ups this node starts by itself on new connections, per window, whatever the peers */
const SYNC_START_RATE = { perWindow: 8, windowMs: 10_000 }
/** per remote address: refused (forged) pushes per window; past it, its pushes are not read */
const PUSH_RATE = { perWindow: 16, windowMs: 10_000 }
/** every node catches up from one peer this often (ms): a connected one and a remembered one by turns */
const RESYNC_MS = GOVERNANCE_RESYNC_MS
/** peers remembered for the re-sync rounds that reach past this node's connections (resync) */
export const KNOWN_PEERS = 256
/** a peer refused this often within the window is hung up on and blocked for blockMs */
export const ABUSE = { strikes: 8, windowMs: 10_000, blockMs: 60_000 }

/**
 * Listeners of a GovernanceService (`on()` returns the function that removes them). Every
 * call is guarded: a listener that throws is logged and the others still run.
 */
export interface GovernanceEvents {
  onHalt?: (reason: string, version: number) => void
  onResume?: (version: number) => void
  onChange?: (snapshot: GovernanceSnapshot, kind: Kind) => void
}

/**
 * What the service needs from its node, the way js-libp2p services take their `Components`
 * (`governance(init)` as a libp2p service gets libp2p's own; `componentsOf(node)` builds them
 * from a started node's public API).
 */
export interface GovernanceComponents {
  peerId: PeerId
  registrar: Pick<Registrar, 'handle' | 'unhandle'>
  connectionManager: Pick<ConnectionManager, 'getConnections' | 'openConnection' | 'closeConnections'>
  /** the node's event bus (peer:identify starts a catch-up) */
  events: Pick<TypedEventTarget<Libp2pEvents>, 'addEventListener' | 'removeEventListener'>
  peerStore: Pick<PeerStore, 'get'>
  logger: ComponentLogger
  /** absent on a keyholder tool's minimal node: it catches up and pushes only */
  pubsub?: GossipSub
  /** peers refused too often are blocked here (src/node/blocklist.ts) */
  blocklist?: { block: (peer: string, ms: number) => void }
}

export interface GovernanceServiceInit {
  state: GovernanceState
}

/** a started node's public API as GovernanceComponents (what `new GovernanceService(node, state)` uses) */
export function componentsOf (node: MeshNode): GovernanceComponents {
  return {
    peerId: node.peerId,
    registrar: {
      handle: async (protocol, handler, options) => { await node.handle(protocol, handler, options) },
      unhandle: async (protocol, options) => { await node.unhandle(protocol, options) }
    },
    connectionManager: {
      getConnections: (peer) => node.getConnections(peer),
      openConnection: async (peer, options) => await node.dial(peer as PeerId, options),
      closeConnections: async (peer, options) => { await node.hangUp(peer, options) }
    },
    events: node,
    peerStore: node.peerStore,
    logger: node.logger,
    pubsub: node.services.pubsub,
    blocklist: node.services.blocklist
  }
}

/** `components[name]`, or undefined where libp2p's components (a Proxy that throws on a missing service) lack it */
function optionalComponent<K extends keyof GovernanceComponents> (components: GovernanceComponents, name: K): GovernanceComponents[K] | undefined {
  try {
    return components[name]
  } catch {
    return undefined
  }
}

/** libp2p service factory: `services: { governance: governance({ state }) }` */
export function governance (init: GovernanceServiceInit): (components: GovernanceComponents) => GovernanceService {
  return (components) => new GovernanceService(components, init)
}

/** what a peer answered to a push: 'applied', a refusal code, or no answer */
export type PushAnswer = 'applied' | RefusalCode | 'no-answer'

export interface SubmitResult {
  /** applied here (this node verified it and changed its state) */
  applied: boolean
  code?: RefusalCode
  reason?: string
  /** peers it was pushed to, by answer */
  peers: Partial<Record<PushAnswer, number>>
  /** gossipsub peers it was published to */
  gossipRecipients: number
}

export class GovernanceService implements Startable {
  readonly topic: string
  readonly state: GovernanceState
  readonly components: GovernanceComponents
  private readonly log: Logger
  private readonly listeners = new Set<GovernanceEvents>()
  private readonly syncServed = new RateLimiter(SYNC_RATE.perWindow, SYNC_RATE.windowMs)
  private readonly syncStarted = new RateLimiter(SYNC_START_RATE.perWindow, SYNC_START_RATE.windowMs)
  private readonly lastSyncFrom = new RateLimiter(1, 5_000)
  private readonly pushForgeries = new RateLimiter(PUSH_RATE.perWindow, PUSH_RATE.windowMs)
  private resyncTimer?: NodeJS.Timeout
  /** refused pushes and catch-ups (rate limit or forgery) per peer: at ABUSE.strikes the peer is blocked */
  private readonly abuse = new Strikes(ABUSE.strikes, ABUSE.windowMs)
  /** time each accepted message was applied here (ms since epoch), by version: for measurements (last 64) */
  readonly appliedAt = new Map<number, number>()
  private started = false
  private topicJoined = false

  readonly [Symbol.toStringTag] = '@meshllm/governance'
  readonly [serviceCapabilities]: string[] = ['@meshllm/governance']

  /**
   * `new GovernanceService(components, { state })` (what the `governance()` factory does), or,
   * for callers holding a started node, `new GovernanceService(node, state)`: the node's public
   * API as components (componentsOf).
   */
  constructor (components: GovernanceComponents, init: GovernanceServiceInit)
  constructor (node: MeshNode, state: GovernanceState)
  constructor (components: GovernanceComponents | MeshNode, init: GovernanceServiceInit | GovernanceState) {
    const legacy = init instanceof GovernanceState
    this.components = legacy ? componentsOf(components as MeshNode) : components as GovernanceComponents
    this.state = legacy ? init : init.state
    this.topic = govTopic(this.state.config.meshId)
    this.log = this.components.logger.forComponent('meshllm:governance')
    this.onConnect = this.onConnect.bind(this)
    this.handleSync = this.handleSync.bind(this)
    this.handlePush = this.handlePush.bind(this)
  }

  /** Adds listeners; returns the function that removes them. */
  on (events: GovernanceEvents): () => void {
    this.listeners.add(events)
    return () => { this.listeners.delete(events) }
  }

  get haltReason (): string | undefined {
    return this.state.haltReason
  }

  private get pubsub (): GossipSub | undefined {
    return optionalComponent(this.components, 'pubsub')
  }

  /** the peers this node has a connection to */
  private peers (): PeerId[] {
    const seen = new Map<string, PeerId>()
    for (const c of this.components.connectionManager.getConnections()) seen.set(c.remotePeer.toString(), c.remotePeer)
    return [...seen.values()]
  }

  isStarted (): boolean {
    return this.started
  }

  async start (): Promise<void> {
    if (this.started) return
    // on a running node (new GovernanceService(node, state).start()) gossipsub is up already;
    // as a libp2p service, gossipsub starts alongside and the topic is joined in afterStart()
    if ((this.pubsub as { isStarted?: () => boolean } | undefined)?.isStarted?.() === true) this.joinTopic()
    // peers behind NAT are reached through relays: limited connections
    await this.components.registrar.handle(GOV_SYNC_PROTOCOL, this.handleSync, { maxInboundStreams: 32, maxOutboundStreams: 32, runOnLimitedConnection: true })
    await this.components.registrar.handle(GOV_PUSH_PROTOCOL, this.handlePush, { maxInboundStreams: 8, maxOutboundStreams: 64, runOnLimitedConnection: true })
    this.components.events.addEventListener('peer:identify', this.onConnect)
    // anti-entropy: one catch-up per RESYNC_MS, whatever else happened
    this.resyncTimer = setInterval(() => { this.resync() }, RESYNC_MS)
    this.resyncTimer.unref()
    this.started = true
  }

  /**
   * One catch-up: on even rounds from a random connected peer, on odd rounds from a random
   * peer this node has seen speak the sync protocol, dialled if it is not connected. A node
   * whose connections all lie on one side of a partition that has healed (gossipsub dials
   * nobody; libp2p redials only the peers kad-dht keeps alive, its closest, which may all lie
   * on the same side) still hears the other side within 2 × RESYNC_MS; then gossip spreads
   * what it learnt. At most one dial per node per 2 × RESYNC_MS; the connection budget closes
   * the connection once idle.
   */
  private resync (): void {
    const connected = this.peers()
    const pool = this.resyncRound++ % 2 === 1 && this.known.size > 0 ? [...this.known.values()] : connected
    if (pool.length === 0) return
    const peer = pool[Math.floor(Math.random() * pool.length)]
    const id = peer.toString()
    // the catch-up a new connection's identify would start is this one
    if (!this.lastSyncFrom.take(id)) return
    void this.syncFrom(peer).catch(err => {
      this.log('re-sync from %p failed: %s', peer, err.message)
      // gone or unreachable: forgotten until it connects again
      if (this.components.connectionManager.getConnections(peer).length === 0) this.known.delete(id)
    })
  }

  private resyncRound = 0
  /** peers seen speaking GOV_SYNC_PROTOCOL, the KNOWN_PEERS most recent (what odd re-sync rounds pick from) */
  private readonly known = new Map<string, PeerId>()

  /** libp2p calls it once every component started (gossipsub included) */
  afterStart (): void {
    this.joinTopic()
  }

  /** validator, score parameters and subscription of the governance topic (a node without gossipsub has none) */
  private joinTopic (): void {
    const pubsub = this.pubsub
    if (pubsub == null || this.topicJoined) return
    pubsub.topicValidators.set(this.topic, async (_peer: PeerId, msg: PubsubMessage) => await this.validate(msg.data))
    scoreTopic(pubsub, this.topic, GOVERNANCE_TOPIC_SCORE)
    pubsub.subscribe(this.topic)
    this.topicJoined = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.topicJoined = false
    const pubsub = this.pubsub
    pubsub?.topicValidators.delete(this.topic)
    try { pubsub?.unsubscribe(this.topic) } catch {}
    this.components.events.removeEventListener('peer:identify', this.onConnect)
    clearInterval(this.resyncTimer)
    await this.components.registrar.unhandle(GOV_SYNC_PROTOCOL).catch(() => {})
    await this.components.registrar.unhandle(GOV_PUSH_PROTOCOL).catch(() => {})
    this.started = false
  }

  /**
   * gossipsub topic validator: apply if valid. Forgeries are Rejected (the sender's score
   * pays, GOVERNANCE_TOPIC_SCORE); honest duplicates (stale: the push got here first, or a
   * clock difference) are Ignored, never penalised. Never throws.
   */
  private async validate (data: Uint8Array): Promise<TopicValidatorResult> {
    try {
      const r = await this.apply(data, 'gossip')
      if (r.accepted) return ACCEPT
      return FORGERY_CODES.has(r.code) ? REJECT : IGNORE
    } catch (err) {
      this.log.error('validator failure: %e', err)
      return REJECT
    }
  }

  /** verifies, applies, persists and fires hooks; returns whether it was accepted */
  async ingest (bytes: Uint8Array, via: string, catchUp = false): Promise<boolean> {
    return (await this.apply(bytes, via, catchUp)).accepted
  }

  /** verifies, applies, persists and fires hooks */
  async apply (bytes: Uint8Array, via: string, catchUp = false): Promise<ApplyResult> {
    const r = await this.state.apply(bytes, { catchUp })
    if (!r.accepted) {
      this.log('refused governance message via %s: %s (%s)', via, r.code, r.reason)
      return r
    }
    const m = r.envelope.message
    this.appliedAt.set(m.version, Date.now())
    if (this.appliedAt.size > 64) this.appliedAt.delete(this.appliedAt.keys().next().value as number)
    this.log('accepted %s version %d via %s', Kind[m.kind], m.version, via)
    // learnt by a push or from an expert's HALTED answer: spread it, so a message that reached
    // one node reaches the rest (a catch-up spreads only the state in force: syncFrom)
    if (via.startsWith('push') || via === 'expert') void this.gossip(bytes)
    for (const l of [...this.listeners]) {
      try {
        if (m.kind === Kind.HALT) l.onHalt?.(m.reason, m.version)
        if (m.kind === Kind.RESUME && r.noop !== true) l.onResume?.(m.version)
        l.onChange?.(this.state.snapshot(), m.kind)
      } catch (err) {
        this.log.error('governance listener failed: %e', err)
      }
    }
    return r
  }

  /**
   * Submits an already-signed envelope (keyholder CLI, gRPC relay): verified and applied
   * here first; a refusal here is the answer (nothing is sent). Once applied, it is pushed
   * to every connected peer that speaks GOV_PUSH_PROTOCOL (each answers with its own
   * verdict) and published on the gossipsub topic at the same time.
   */
  async submit (bytes: Uint8Array, options: AbortOptions = {}): Promise<SubmitResult> {
    const r = await this.apply(bytes, 'submit')
    if (!r.accepted) return { applied: false, code: r.code, reason: r.reason, peers: {}, gossipRecipients: 0 }
    const [peers, gossipRecipients] = await Promise.all([
      this.pushToPeers(bytes, options),
      this.gossip(bytes)
    ])
    return { applied: true, peers, gossipRecipients }
  }

  /** @deprecated use submit(); kept for the shape callers had: accepted means applied here */
  async publish (bytes: Uint8Array, options: AbortOptions = {}): Promise<{ accepted: boolean, recipients: number, reason?: string, code?: RefusalCode }> {
    const r = await this.submit(bytes, options)
    return { accepted: r.applied, recipients: r.gossipRecipients + (r.peers.applied ?? 0), reason: r.reason, code: r.code }
  }

  private async gossip (bytes: Uint8Array): Promise<number> {
    const pubsub = this.pubsub
    if (pubsub == null) return 0
    try {
      const res = await pubsub.publish(this.topic, bytes)
      return res.recipients.length
    } catch (err) {
      this.log('gossip publish failed: %s', errorMessage(err))
      return 0
    }
  }

  /**
   * Pushes an envelope to every connected peer that speaks the push protocol; counts answers.
   * Each push ends after 5 s (or at `options.signal`).
   */
  async pushToPeers (bytes: Uint8Array, options: AbortOptions = {}): Promise<Partial<Record<PushAnswer, number>>> {
    const answers: Partial<Record<PushAnswer, number>> = {}
    const peers = await this.pushTargets()
    await Promise.all(peers.map(async peer => {
      const a = await this.pushTo(peer, bytes, options).catch(() => 'no-answer' as const)
      answers[a] = (answers[a] ?? 0) + 1
    }))
    return answers
  }

  private async pushTargets (): Promise<PeerId[]> {
    // every connected peer: one that does not speak the protocol refuses it at negotiation
    // (counted as no answer); the peer store's protocol list is not complete on a node
    // without identify (a keyholder tool's minimal node)
    return this.peers()
  }

  /** Pushes one envelope to one peer and reads its verdict (within 5 s, or until `options.signal`). */
  async pushTo (peer: PeerId, bytes: Uint8Array, options: AbortOptions = {}): Promise<PushAnswer> {
    const signal = withDeadline(options, 5_000)
    const stream = await this.streamTo(peer, GOV_PUSH_PROTOCOL, { signal })
    const lp = lpStream(stream, lengthPrefixOptions(MAX_ENVELOPE_BYTES))
    try {
      await lp.write(bytes, { signal })
      const answer = new TextDecoder().decode((await lp.read({ signal })).subarray())
      await stream.close({ signal }).catch(() => {})
      return PUSH_ANSWERS.has(answer) ? answer as PushAnswer : 'no-answer'
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  private async handlePush (stream: Stream, connection: Connection): Promise<void> {
    await this.serve(stream, connection, undefined, async (lp, signal) => {
      // genuine messages never count against an address: only its forgeries do, so a
      // keyholder sharing an address with a forger is refused only while that forger is busy
      if (this.pushForgeries.exhausted(addressKey(connection))) throw new RateLimitedError(`too many forged governance pushes from ${addressKey(connection)}`)
      const bytes = (await lp.read({ signal })).subarray()
      const r = await this.apply(bytes, `push ${connection.remotePeer.toString().slice(-6)}`)
      if (!r.accepted && FORGERY_CODES.has(r.code)) {
        this.pushForgeries.take(addressKey(connection))
        this.offence(connection)
      }
      await lp.write(new TextEncoder().encode(r.accepted ? 'applied' : r.code), { signal })
    })
  }

  /**
   * Runs one inbound governance stream: the address's rate limit first (a refusal is an
   * offence), then `work` under a 5 s deadline tied to the stream's life; closes the stream,
   * or aborts it on any failure.
   */
  private async serve (
    stream: Stream,
    connection: Connection,
    limiter: RateLimiter | undefined,
    work: (lp: ReturnType<typeof lpStream>, signal: AbortSignal) => Promise<void>
  ): Promise<void> {
    const life = streamLifetime(stream)
    const signal = AbortSignal.any([AbortSignal.timeout(5_000), life.signal])
    try {
      if (limiter != null && !limiter.take(addressKey(connection))) throw new RateLimitedError(`too many governance requests from ${addressKey(connection)}`)
      await work(lpStream(stream, lengthPrefixOptions(MAX_ENVELOPE_BYTES)), signal)
      await stream.close({ signal })
    } catch (err) {
      if (err instanceof RateLimitedError) this.offence(connection)
      stream.abort(err as Error)
    } finally {
      life.dispose()
    }
  }

  /** one refused request of a peer; the one that makes ABUSE.strikes blocks it and hangs up */
  private offence (connection: Connection): void {
    const peer = connection.remotePeer
    if (!this.abuse.strike(peer.toString())) return
    this.log('blocking %p for %d s: too many refused governance requests', peer, ABUSE.blockMs / 1000)
    optionalComponent(this.components, 'blocklist')?.block(peer.toString(), ABUSE.blockMs)
    void this.components.connectionManager.closeConnections(peer).catch(() => {})
  }

  private onConnect (evt: CustomEvent<IdentifyResult>): void {
    const peer = evt.detail.peerId
    if (!(evt.detail.protocols ?? []).includes(GOV_SYNC_PROTOCOL)) return
    this.known.delete(peer.toString())
    this.known.set(peer.toString(), peer)
    if (this.known.size > KNOWN_PEERS) this.known.delete(this.known.keys().next().value as string)
    // at most SYNC_START_RATE in all (new peer ids are free), and one per peer per 5 s;
    // the periodic re-sync (start()) catches up whatever these limits skip
    if (this.syncStarted.exhausted('all')) return
    if (!this.lastSyncFrom.take(peer.toString())) return
    this.syncStarted.take('all')
    void this.syncFrom(peer).catch(err => this.log('sync from %p failed: %s', peer, err.message))
  }

  /**
   * Catches up from one peer: every envelope it holds is verified and applied here, in
   * version order. Stale ones cost no signature check; the catch-up ends after
   * MAX_SYNC_FORGERIES forgeries (a peer answering junk wastes at most that many checks).
   * The answer is read within 5 s, or until `options.signal` aborts.
   */
  /** a governance stream to `peer`, on its open connection when there is one (a relayed one included) */
  private async streamTo (peer: PeerId, protocol: string, options: AbortOptions): Promise<Stream> {
    const cm = this.components.connectionManager
    return await streamTo({ getConnections: (p) => cm.getConnections(p), dial: async (p, o) => await cm.openConnection(p, o) }, peer, protocol, options)
  }

  async syncFrom (peer: PeerId, options: AbortOptions = {}): Promise<number> {
    const signal = options.signal ?? AbortSignal.timeout(5_000)
    const stream = await this.streamTo(peer, GOV_SYNC_PROTOCOL, { signal })
    const lp = lpStream(stream, lengthPrefixOptions(MAX_ENVELOPE_BYTES))
    const got: Uint8Array[] = []
    try {
      for (let i = 0; i < MAX_SYNC_ENVELOPES; i++) {
        let msg
        try {
          msg = await lp.read({ signal })
        } catch (err) {
          // a clean end of the answer; a reset (a refusal, a peer gone) is a failed catch-up
          if (errorName(err) === 'UnexpectedEOFError' && stream.status !== 'reset' && stream.status !== 'aborted') break
          throw err
        }
        got.push(msg.subarray())
      }
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
    // state messages in version order (votes are independent)
    const versioned = got.map(b => { try { return { b, v: decodeEnvelope(b).message.version } } catch { return { b, v: -1 } } })
    const ordered = versioned.filter(x => x.v >= 0).sort((a, b) => a.v - b.v)
    let accepted = 0
    let forgeries = got.length - ordered.length
    let latest: Uint8Array | undefined
    for (const { b } of ordered) {
      if (forgeries >= MAX_SYNC_FORGERIES) {
        this.log('sync from %p ended: %d forgeries', peer, forgeries)
        break
      }
      const r = await this.apply(b, `sync ${peer.toString().slice(-6)}`, true)
      if (r.accepted) {
        accepted++
        if (r.kind !== Kind.VOTE) latest = b
      } else if (FORGERY_CODES.has(r.code)) forgeries++
    }
    // this node learnt the state in force from a peer: spread that one message, so a peer that
    // missed it by gossip gets it (its neighbours that have it just Ignore it)
    if (latest != null && this.state.version === decodeEnvelope(latest).message.version) void this.gossip(latest)
    return accepted
  }

  /**
   * syncAll until at least one peer answers, within `deadlineMs`: a peer may refuse while it
   * serves others (catch-ups served are rate-limited per address), so a round nobody answered
   * is tried again every 500 ms. What the last round gave.
   */
  async catchUp (deadlineMs: number): Promise<{ peers: number, answered: number, applied: number }> {
    const deadline = Date.now() + deadlineMs
    let sync = await this.syncAll({ signal: AbortSignal.timeout(Math.min(5_000, deadlineMs)) })
    while (sync.answered === 0 && sync.peers > 0 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 500))
      sync = await this.syncAll({ signal: AbortSignal.timeout(Math.max(500, deadline - Date.now())) })
    }
    return sync
  }

  /**
   * Catches up from every connected peer (within 5 s, or until `options.signal` aborts): how
   * many peers answered, and how many envelopes were applied.
   */
  async syncAll (options: SyncAllOptions = {}): Promise<{ peers: number, answered: number, applied: number }> {
    let applied = 0
    let answered = 0
    const peers = this.peers()
    const signal = withDeadline(options, 5_000)
    await Promise.allSettled(peers.map(async p => { applied += await this.syncFrom(p, { signal }); answered++ }))
    return { peers: peers.length, answered, applied }
  }

  private async handleSync (stream: Stream, connection: Connection): Promise<void> {
    await this.serve(stream, connection, this.syncServed, async (lp, signal) => {
      for (const env of this.state.catchUp()) await lp.write(env, { signal })
    })
  }
}

/** syncAll: the caller's signal bounds the whole catch-up (default: 5 s) */
export type SyncAllOptions = AbortOptions

/** `options.signal` if given, else a timeout of `ms` */
function withDeadline (options: AbortOptions, ms: number): AbortSignal {
  return options.signal ?? AbortSignal.timeout(ms)
}

const PUSH_ANSWERS = new Set<string>([
  'applied', 'known', 'malformed', 'mesh', 'future', 'expired', 'lifetime', 'not-keyholder', 'threshold', 'bad-signature', 'unsafe-thresholds',
  'stale', 'replayed-vote', 'lifts-older'
])
/** most envelopes read from one catch-up answer (state log, keyholder changes, votes) */
const MAX_SYNC_ENVELOPES = 1024
