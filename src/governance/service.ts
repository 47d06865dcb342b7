/**
 * Governance on a node: the gossipsub topic of the mesh with a validator that checks every
 * message against the keyholders (Reject, never throw: senders of forgeries are penalised by
 * gossipsub's peer scoring), catch-up from peers over /meshllm/gov-sync/1.0.0 when joining or
 * reconnecting, and the hooks that stop inference on a valid HALT.
 *
 * Authority comes only from keyholder signatures inside the payload; gossipsub's own
 * signature only tells which peer published.
 */
import type { Logger, PeerId, Stream, Connection } from '@libp2p/interface'
import type { TopicValidatorResult, Message as PubsubMessage } from '@libp2p/gossipsub'
import { lpStream } from '@libp2p/utils'
import { defaultLogger } from '@libp2p/logger'
import type { MeshNode } from '../node/node.js'
import { Kind, MAX_ENVELOPE_BYTES, decodeEnvelope, type RefusalCode } from './envelope.js'
import { GovernanceState, type ApplyResult, type GovernanceSnapshot } from './state.js'
import { streamLifetime } from '../util/stream-lifetime.js'
import { Strikes } from '../node/blocklist.js'

export const GOV_SYNC_PROTOCOL = '/meshllm/gov-sync/1.0.0'
/** a keyholder tool (or any node) hands one signed envelope to a peer and learns its verdict */
export const GOV_PUSH_PROTOCOL = '/meshllm/gov-push/1.0.0'
export const govTopic = (meshId: string): string => `/meshllm/gov/${meshId}/1`

/**
 * gossipsub topic score parameters of the governance topic: a delivery the validator
 * Rejects (a forgery) costs the sender -100 × (invalid deliveries)², so one forgery puts it
 * below the graylist threshold (-80: everything it sends is ignored) for ≈ 11 s, ten for
 * ≈ 4 min (decay 0.99 per second). The topic is nearly silent by design, so the delivery
 * rate terms (P2, P3, P3b) are off: honest quiet peers are never penalised.
 */
export const GOVERNANCE_TOPIC_SCORE = {
  topicWeight: 1,
  timeInMeshWeight: 0,
  timeInMeshQuantum: 1000,
  timeInMeshCap: 1,
  firstMessageDeliveriesWeight: 0,
  firstMessageDeliveriesDecay: 0.5,
  firstMessageDeliveriesCap: 1,
  meshMessageDeliveriesWeight: 0,
  meshMessageDeliveriesDecay: 0.5,
  meshMessageDeliveriesCap: 1,
  meshMessageDeliveriesThreshold: 1,
  meshMessageDeliveriesWindow: 10,
  meshMessageDeliveriesActivation: 5000,
  meshFailurePenaltyWeight: 0,
  meshFailurePenaltyDecay: 0.5,
  invalidMessageDeliveriesWeight: -100,
  invalidMessageDeliveriesDecay: 0.99
}

/**
 * Gives a topic its score parameters on a running gossipsub. @libp2p/gossipsub takes topic
 * score parameters only at construction and reads them lazily from its PeerScore's params,
 * so the governance topic (known only once the governance file is read) is added there.
 * The one place that touches gossipsub's internals; test/adversarial/governance.spec.ts
 * fails if it stops working (a forger's score must drop below the graylist threshold).
 */
export function scoreTopic (pubsub: any, topic: string, params: typeof GOVERNANCE_TOPIC_SCORE): void {
  const topics = pubsub?.score?.params?.topics
  if (topics == null) throw new Error('gossipsub has no peer-score parameters to extend (dependency changed?)')
  topics[topic] ??= { ...params }
}

// gossipsub's TopicValidatorResult values (a string enum), without loading gossipsub for them
const ACCEPT = 'accept' as TopicValidatorResult
const REJECT = 'reject' as TopicValidatorResult
const IGNORE = 'ignore' as TopicValidatorResult

/** refusals that prove the sender forged or mangled something (gossipsub Reject: penalised) */
export const FORGERY_CODES: ReadonlySet<RefusalCode> = new Set<RefusalCode>(['malformed', 'mesh', 'lifetime', 'not-keyholder', 'threshold', 'bad-signature', 'unsafe-thresholds'])
/** a catch-up from one peer ends after this many forgeries in its answer */
const MAX_SYNC_FORGERIES = 4
/** per remote address: at most this many catch-ups served per window */
const SYNC_RATE = { perWindow: 16, windowMs: 10_000 }
/** catch-ups this node starts by itself on new connections, per window, whatever the peers */
const SYNC_START_RATE = { perWindow: 8, windowMs: 10_000 }
/** per remote address: refused (forged) pushes per window; past it, its pushes are not read */
const PUSH_RATE = { perWindow: 16, windowMs: 10_000 }
/** every node catches up from one random connected peer this often (ms) */
const RESYNC_MS = 60_000
/** a peer refused this often within the window is hung up on and blocked for blockMs */
export const ABUSE = { strikes: 8, windowMs: 10_000, blockMs: 60_000 }
/** most remote addresses tracked by the rate limiters */
const MAX_TRACKED_ADDRESSES = 4096

export interface GovernanceEvents {
  onHalt?: (reason: string, version: number) => void
  onResume?: (version: number) => void
  onChange?: (snapshot: GovernanceSnapshot, kind: Kind) => void
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

/** Fixed-window counter per key, bounded in keys (oldest dropped). */
class RateLimiter {
  private readonly windows = new Map<string, { start: number, n: number }>()
  constructor (private readonly perWindow: number, private readonly windowMs: number, private readonly maxKeys = MAX_TRACKED_ADDRESSES) {}
  take (key: string, now = Date.now()): boolean {
    let w = this.windows.get(key)
    if (w == null || now - w.start >= this.windowMs) {
      this.windows.delete(key)
      w = { start: now, n: 0 }
      this.windows.set(key, w)
      if (this.windows.size > this.maxKeys) this.windows.delete(this.windows.keys().next().value as string)
    }
    if (w.n >= this.perWindow) return false
    w.n++
    return true
  }

  /** whether `key` has used up its window (nothing is consumed) */
  exhausted (key: string, now = Date.now()): boolean {
    const w = this.windows.get(key)
    return w != null && now - w.start < this.windowMs && w.n >= this.perWindow
  }

  get size (): number { return this.windows.size }
}

/**
 * The address a rate limit applies to: the connection's remote IPv4 address, or its IPv6
 * /64 (one host commonly has a whole /64), never the peer id, which is free.
 */
export function addressKey (connection: Pick<Connection, 'remoteAddr'> | undefined): string {
  const c = connection?.remoteAddr?.getComponents().find(x => x.name === 'ip4' || x.name === 'ip6')
  if (c?.value == null) return connection?.remoteAddr?.toString() ?? 'unknown'
  if (c.name === 'ip4') return c.value
  return `${ipv6Prefix64(c.value)}::/64`
}

/** the first four groups of an IPv6 address ("2001:db8:1:2::5" → "2001:db8:1:2") */
function ipv6Prefix64 (addr: string): string {
  const [head, tail = ''] = addr.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === '' ? [] : tail.split(':')
  const groups = addr.includes('::') ? [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t] : h
  return groups.slice(0, 4).map(g => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')
}

export class GovernanceService {
  readonly topic: string
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

  constructor (readonly node: MeshNode, readonly state: GovernanceState) {
    this.topic = govTopic(state.config.meshId)
    this.log = defaultLogger().forComponent('meshllm:governance')
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

  async start (): Promise<void> {
    // a minimal node (keyholder tool) has no gossipsub: it catches up and pushes only
    const pubsub = this.node.services.pubsub as any
    if (pubsub != null) {
      pubsub.topicValidators.set(this.topic, async (_peer: PeerId, msg: PubsubMessage) => await this.validate(msg.data))
      scoreTopic(pubsub, this.topic, GOVERNANCE_TOPIC_SCORE)
      pubsub.subscribe(this.topic)
    }
    await this.node.handle(GOV_SYNC_PROTOCOL, this.handleSync, { maxInboundStreams: 32, maxOutboundStreams: 32 })
    await this.node.handle(GOV_PUSH_PROTOCOL, this.handlePush, { maxInboundStreams: 8, maxOutboundStreams: 64 })
    this.node.addEventListener('peer:identify', this.onConnect)
    // anti-entropy: one catch-up from one random peer per RESYNC_MS, whatever else happened
    this.resyncTimer = setInterval(() => {
      const peers = this.node.getPeers()
      if (peers.length === 0) return
      const peer = peers[Math.floor(Math.random() * peers.length)]
      void this.syncFrom(peer).catch(err => this.log('re-sync from %p failed: %s', peer, err.message))
    }, RESYNC_MS)
    this.resyncTimer.unref()
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    const pubsub = this.node.services.pubsub as any
    pubsub?.topicValidators.delete(this.topic)
    try { pubsub?.unsubscribe(this.topic) } catch {}
    this.node.removeEventListener('peer:identify', this.onConnect)
    clearInterval(this.resyncTimer)
    await this.node.unhandle(GOV_SYNC_PROTOCOL).catch(() => {})
    await this.node.unhandle(GOV_PUSH_PROTOCOL).catch(() => {})
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
    } catch (err: any) {
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
      } catch (err: any) {
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
  async submit (bytes: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<SubmitResult> {
    const r = await this.apply(bytes, 'submit')
    if (!r.accepted) return { applied: false, code: r.code, reason: r.reason, peers: {}, gossipRecipients: 0 }
    const [peers, gossipRecipients] = await Promise.all([
      this.pushToPeers(bytes, options),
      this.gossip(bytes)
    ])
    return { applied: true, peers, gossipRecipients }
  }

  /** @deprecated use submit(); kept for the shape callers had: accepted means applied here */
  async publish (bytes: Uint8Array): Promise<{ accepted: boolean, recipients: number, reason?: string, code?: RefusalCode }> {
    const r = await this.submit(bytes)
    return { accepted: r.applied, recipients: r.gossipRecipients + (r.peers.applied ?? 0), reason: r.reason, code: r.code }
  }

  private async gossip (bytes: Uint8Array): Promise<number> {
    if (this.node.services.pubsub == null) return 0
    try {
      const res = await (this.node.services.pubsub as any).publish(this.topic, bytes)
      return res.recipients.length
    } catch (err: any) {
      this.log('gossip publish failed: %s', err.message)
      return 0
    }
  }

  /** Pushes an envelope to every connected peer that speaks the push protocol; counts answers. */
  async pushToPeers (bytes: Uint8Array, options: { signal?: AbortSignal, timeoutMs?: number } = {}): Promise<Partial<Record<PushAnswer, number>>> {
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
    return this.node.getPeers()
  }

  /** Pushes one envelope to one peer and reads its verdict. */
  async pushTo (peer: PeerId, bytes: Uint8Array, options: { signal?: AbortSignal, timeoutMs?: number } = {}): Promise<PushAnswer> {
    const signal = AbortSignal.any([AbortSignal.timeout(options.timeoutMs ?? 5_000), ...(options.signal != null ? [options.signal] : [])])
    const stream = await this.node.dialProtocol(peer, GOV_PUSH_PROTOCOL, { signal })
    const lp = lpStream(stream, { maxDataLength: MAX_ENVELOPE_BYTES })
    try {
      await lp.write(bytes, { signal })
      const answer = new TextDecoder().decode((await lp.read({ signal })).subarray())
      await stream.close({ signal }).catch(() => {})
      return PUSH_ANSWERS.has(answer) ? answer as PushAnswer : 'no-answer'
    } catch (err: any) {
      stream.abort(err)
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
  private async serve (stream: Stream, connection: Connection, limiter: RateLimiter | undefined, work: (lp: ReturnType<typeof lpStream>, signal: AbortSignal) => Promise<void>): Promise<void> {
    const life = streamLifetime(stream)
    const signal = AbortSignal.any([AbortSignal.timeout(5_000), life.signal])
    try {
      if (limiter != null && !limiter.take(addressKey(connection))) throw new RateLimitedError(`too many governance requests from ${addressKey(connection)}`)
      await work(lpStream(stream, { maxDataLength: MAX_ENVELOPE_BYTES }), signal)
      await stream.close({ signal })
    } catch (err: any) {
      if (err instanceof RateLimitedError) this.offence(connection)
      stream.abort(err)
    } finally {
      life.dispose()
    }
  }

  /** one refused request of a peer; the one that makes ABUSE.strikes blocks it and hangs up */
  private offence (connection: Connection): void {
    const peer = connection.remotePeer
    if (!this.abuse.strike(peer.toString())) return
    this.log('blocking %p for %d s: too many refused governance requests', peer, ABUSE.blockMs / 1000)
    ;(this.node.services as any).blocklist?.block(peer.toString(), ABUSE.blockMs)
    void this.node.hangUp(peer).catch(() => {})
  }

  private onConnect (evt: CustomEvent<any>): void {
    const peer: PeerId = evt.detail.peerId
    if (!(evt.detail.protocols ?? []).includes(GOV_SYNC_PROTOCOL)) return
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
   */
  async syncFrom (peer: PeerId, signal = AbortSignal.timeout(5_000)): Promise<number> {
    const stream = await this.node.dialProtocol(peer, GOV_SYNC_PROTOCOL, { signal })
    const lp = lpStream(stream, { maxDataLength: MAX_ENVELOPE_BYTES })
    const got: Uint8Array[] = []
    try {
      for (let i = 0; i < MAX_SYNC_ENVELOPES; i++) {
        let msg
        try {
          msg = await lp.read({ signal })
        } catch (err: any) {
          // a clean end of the answer; a reset (a refusal, a peer gone) is a failed catch-up
          if (err.name === 'UnexpectedEOFError' && stream.status !== 'reset' && stream.status !== 'aborted') break
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
    const ordered = got.map(b => { try { return { b, v: decodeEnvelope(b).message.version } } catch { return { b, v: -1 } } }).filter(x => x.v >= 0).sort((a, b) => a.v - b.v)
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
   * Catches up from every connected peer (bounded by `timeoutMs`, default 5 s): how many
   * peers answered, and how many envelopes were applied.
   */
  async syncAll (options: { signal?: AbortSignal, timeoutMs?: number } = {}): Promise<{ peers: number, answered: number, applied: number }> {
    let applied = 0
    let answered = 0
    const peers = this.node.getPeers()
    const signal = AbortSignal.any([AbortSignal.timeout(options.timeoutMs ?? 5_000), ...(options.signal != null ? [options.signal] : [])])
    await Promise.allSettled(peers.map(async p => { applied += await this.syncFrom(p, signal); answered++ }))
    return { peers: peers.length, answered, applied }
  }

  private async handleSync (stream: Stream, connection: Connection): Promise<void> {
    await this.serve(stream, connection, this.syncServed, async (lp, signal) => {
      for (const env of this.state.catchUp()) await lp.write(env, { signal })
    })
  }
}

const PUSH_ANSWERS = new Set<string>(['applied', 'known', 'malformed', 'mesh', 'future', 'expired', 'lifetime', 'not-keyholder', 'threshold', 'bad-signature', 'unsafe-thresholds', 'stale', 'replayed-vote', 'lifts-older'])
/** most envelopes read from one catch-up answer (state log, keyholder changes, votes) */
const MAX_SYNC_ENVELOPES = 1024

/** a peer asked for more governance work than its address is allowed */
export class RateLimitedError extends Error {
  static override name = 'RateLimitedError'
  override name = 'RateLimitedError'
}
