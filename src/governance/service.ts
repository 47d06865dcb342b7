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
import { TopicValidatorResult, type Message as PubsubMessage } from '@libp2p/gossipsub'
import { lpStream } from '@libp2p/utils'
import { defaultLogger } from '@libp2p/logger'
import type { MeshNode } from '../node/node.js'
import { Kind, MAX_ENVELOPE_BYTES, decodeEnvelope } from './envelope.js'
import { GovernanceState, type GovernanceSnapshot } from './state.js'

export const GOV_SYNC_PROTOCOL = '/meshllm/gov-sync/1.0.0'
export const govTopic = (meshId: string): string => `/meshllm/gov/${meshId}/1`

export interface GovernanceEvents {
  onHalt?: (reason: string, version: number) => void
  onResume?: (version: number) => void
  onChange?: (snapshot: GovernanceSnapshot, kind: Kind) => void
}

export class GovernanceService {
  readonly topic: string
  private readonly log: Logger
  private readonly listeners: GovernanceEvents[] = []
  private readonly syncing = new Map<string, number>()
  /** time each accepted message was applied here (ms since epoch), by version: for measurements */
  readonly appliedAt = new Map<number, number>()
  private started = false

  constructor (readonly node: MeshNode, readonly state: GovernanceState) {
    this.topic = govTopic(state.config.meshId)
    this.log = defaultLogger().forComponent('meshllm:governance')
    this.onMessage = this.onMessage.bind(this)
    this.onConnect = this.onConnect.bind(this)
    this.handleSync = this.handleSync.bind(this)
  }

  on (events: GovernanceEvents): void {
    this.listeners.push(events)
  }

  get haltReason (): string | undefined {
    return this.state.haltReason
  }

  async start (): Promise<void> {
    const pubsub = this.node.services.pubsub as any
    pubsub.topicValidators.set(this.topic, async (_peer: PeerId, msg: PubsubMessage) => this.validate(msg.data))
    pubsub.addEventListener('message', this.onMessage)
    pubsub.subscribe(this.topic)
    await this.node.handle(GOV_SYNC_PROTOCOL, this.handleSync, { maxInboundStreams: 32, maxOutboundStreams: 32 })
    this.node.addEventListener('peer:identify', this.onConnect)
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    const pubsub = this.node.services.pubsub as any
    pubsub.removeEventListener('message', this.onMessage)
    pubsub.topicValidators.delete(this.topic)
    try { pubsub.unsubscribe(this.topic) } catch {}
    this.node.removeEventListener('peer:identify', this.onConnect)
    await this.node.unhandle(GOV_SYNC_PROTOCOL).catch(() => {})
    this.started = false
  }

  /** gossipsub topic validator: apply if valid, else Reject. Never throws. */
  private async validate (data: Uint8Array): Promise<TopicValidatorResult> {
    try {
      const r = await this.ingest(data, 'gossip')
      return r ? TopicValidatorResult.Accept : TopicValidatorResult.Reject
    } catch (err: any) {
      this.log.error('validator failure: %e', err)
      return TopicValidatorResult.Reject
    }
  }

  private onMessage (): void {
    // messages were applied in the validator (before forwarding); nothing to do here
  }

  /** verifies, applies, persists and fires hooks; returns whether it was accepted */
  async ingest (bytes: Uint8Array, via: string, catchUp = false): Promise<boolean> {
    const r = await this.state.apply(bytes, { catchUp })
    if (!r.accepted) {
      this.log('rejected governance message via %s: %s', via, r.reason)
      return false
    }
    const m = r.envelope.message
    this.appliedAt.set(m.version, Date.now())
    this.log('accepted %s version %d via %s', Kind[m.kind], m.version, via)
    for (const l of this.listeners) {
      try {
        if (m.kind === Kind.HALT) l.onHalt?.(m.reason, m.version)
        if (m.kind === Kind.RESUME) l.onResume?.(m.version)
        l.onChange?.(this.state.snapshot(), m.kind)
      } catch (err: any) {
        this.log.error('governance listener failed: %e', err)
      }
    }
    return true
  }

  /** Publishes an already-signed envelope (keyholder CLI, gRPC relay). Applies it locally first. */
  async publish (bytes: Uint8Array): Promise<{ accepted: boolean, recipients: number, reason?: string }> {
    const check = await this.state.apply(bytes)
    if (!check.accepted && !/not above the accepted version|replayed vote/.test(check.reason)) {
      return { accepted: false, recipients: 0, reason: check.reason }
    }
    if (check.accepted) {
      const m = check.envelope.message
      this.appliedAt.set(m.version, Date.now())
      for (const l of this.listeners) {
        if (m.kind === Kind.HALT) l.onHalt?.(m.reason, m.version)
        if (m.kind === Kind.RESUME) l.onResume?.(m.version)
        l.onChange?.(this.state.snapshot(), m.kind)
      }
    }
    const res = await (this.node.services.pubsub as any).publish(this.topic, bytes)
    return { accepted: true, recipients: res.recipients.length }
  }

  private onConnect (evt: CustomEvent<any>): void {
    const peer: PeerId = evt.detail.peerId
    if (!(evt.detail.protocols ?? []).includes(GOV_SYNC_PROTOCOL)) return
    const key = peer.toString()
    const last = this.syncing.get(key) ?? 0
    if (Date.now() - last < 5_000) return
    this.syncing.set(key, Date.now())
    void this.syncFrom(peer).catch(err => this.log('sync from %p failed: %s', peer, err.message))
  }

  /** Catches up from one peer: every envelope it holds is verified and applied here. */
  async syncFrom (peer: PeerId, signal = AbortSignal.timeout(5_000)): Promise<number> {
    const stream = await this.node.dialProtocol(peer, GOV_SYNC_PROTOCOL, { signal })
    const lp = lpStream(stream, { maxDataLength: MAX_ENVELOPE_BYTES })
    const got: Uint8Array[] = []
    try {
      for (let i = 0; i < 1024; i++) {
        let msg
        try {
          msg = await lp.read({ signal })
        } catch (err: any) {
          if (err.name === 'UnexpectedEOFError' || stream.readStatus !== 'readable') break
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
    for (const { b } of ordered) if (await this.ingest(b, `sync ${peer.toString().slice(-6)}`, true)) accepted++
    return accepted
  }

  /** Catches up from every connected peer that speaks the sync protocol. */
  async syncAll (): Promise<number> {
    let n = 0
    await Promise.allSettled(this.node.getPeers().map(async p => { n += await this.syncFrom(p) }))
    return n
  }

  private async handleSync (stream: Stream, _connection: Connection): Promise<void> {
    const signal = AbortSignal.timeout(5_000)
    const lp = lpStream(stream, { maxDataLength: MAX_ENVELOPE_BYTES })
    try {
      for (const env of this.state.catchUp()) await lp.write(env, { signal })
      await stream.close({ signal })
    } catch (err: any) {
      stream.abort(err)
    }
  }
}
