/**
 * Publishes the expert record: a signed, expiring envelope stored in the DHT under the
 * expert's record key, plus provider records under the tokenizer-fingerprint key and the
 * "all experts" key. Refreshed periodically (new seq, new expiry, current free slots).
 */
import type { Logger, PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { nodePrivateKey, type MeshNode } from '../node/node.js'
import { sealExpertRecord, expertRecordKey, expertProvidersCid, MAX_RECORD_LIFETIME_MS, type ExpertRecord } from '../wire/record.js'
import { RECORD_REFRESH_MS, RECORD_TTL_MS } from '../node/periodic.js'
import { routingTableSize } from '../node/dht-internals.js'
import { INFER_PROTOCOL, MAX_RECORD_BYTES, RECORD_PROTOCOL } from '../wire/types.js'
import { lpStream } from '@libp2p/utils'
import { lengthPrefixOptions } from '../wire/length-prefix.js'
import { asError } from '../util/errors.js'
import { streamLifetime } from '../util/stream-lifetime.js'
import type { ModelHost } from './model-host.js'

export interface AdvertiserOptions {
  /** record lifetime (ms); default RECORD_TTL_MS (30 min), at most MAX_RECORD_LIFETIME_MS (1 h: readers refuse longer) */
  ttlMs?: number
  /** re-publication period (ms); default RECORD_REFRESH_MS (10 min), at most half the lifetime (a record is refreshed before it expires) */
  refreshMs?: number
  tokensPerSecond: number
  /**
   * the addresses the record lists, in order (default: the node's own, `node.getMultiaddrs()`).
   * For tests only: a Sybil attacker (test/helpers/sybil.ts) lists a fake address first. A
   * record's addresses are a self-signed claim either way; routers group experts only by the
   * addresses they observe (src/router/selection.ts).
   */
  addrs?: Multiaddr[]
  /**
   * the node's identity key, which signs the record (the key given to createMeshNode, or
   * libp2p's Components.privateKey); default: the node's NodeKey service (nodePrivateKey)
   */
  privateKey?: PrivateKey
}

export class ExpertAdvertiser {
  private timer?: NodeJS.Timeout
  private seq = Date.now()
  /** record lifetime actually used (ms, ≤ MAX_RECORD_LIFETIME_MS) */
  readonly ttlMs: number
  /** re-publication period actually used (ms, ≤ ttlMs / 2) */
  readonly refreshMs: number
  lastRecord?: ExpertRecord
  /** the sealed envelope of lastRecord: what /meshllm/record answers */
  lastEnvelope?: Uint8Array
  lastPublishedAt = 0
  private readonly privateKey: PrivateKey

  constructor (private readonly node: MeshNode, private readonly host: ModelHost, private readonly opts: AdvertiserOptions, private readonly log: Logger) {
    this.privateKey = opts.privateKey ?? nodePrivateKey(node)
    if (!this.privateKey.publicKey.equals(node.peerId.publicKey)) throw new WrongIdentityKeyError('the advertiser\'s private key is not the node\'s identity key: peers would refuse its record')
    this.ttlMs = Math.min(opts.ttlMs ?? RECORD_TTL_MS, MAX_RECORD_LIFETIME_MS)
    this.refreshMs = Math.min(opts.refreshMs ?? RECORD_REFRESH_MS, Math.floor(this.ttlMs / 2))
  }

  buildRecord (): ExpertRecord {
    const now = Date.now()
    return {
      peerId: this.node.peerId,
      protocol: INFER_PROTOCOL,
      modelName: this.host.summary.name,
      parameterCount: this.host.parameterCount,
      quantization: this.host.summary.quantization,
      contextLength: this.host.contextSize,
      tokenizerFingerprint: this.host.summary.fingerprint,
      tokensPerSecond: this.opts.tokensPerSecond,
      freeSlots: this.host.freeSlots,
      maxSlots: this.host.maxSessions,
      seq: this.seq++,
      issuedAtMs: now,
      expiresAtMs: now + this.ttlMs,
      addrs: (this.opts.addrs ?? this.node.getMultiaddrs()).map(a => a.decapsulateCode(421))
    }
  }

  /** Publishes once; resolves when the DHT operations finished (errors are logged, not thrown). */
  async publish (): Promise<void> {
    const record = this.buildRecord()
    const envelope = await sealExpertRecord(record, this.privateKey)
    const dht = this.node.services.dht
    const signal = AbortSignal.timeout(Math.max(5_000, this.refreshMs))
    const drain = async (it: AsyncIterable<unknown>): Promise<void> => { for await (const _ of it) { void _ } }
    const results = await Promise.allSettled([
      drain(dht.put(expertRecordKey(this.node.peerId), envelope, { signal })),
      drain(dht.provide(await expertProvidersCid(this.host.summary.fingerprint), { signal })),
      drain(dht.provide(await expertProvidersCid(), { signal }))
    ])
    for (const r of results) if (r.status === 'rejected') this.log('advertise: %s', r.reason?.message ?? r.reason)
    this.lastRecord = record
    this.lastEnvelope = envelope
    this.lastPublishedAt = Date.now()
    this.routingAtPublish = routingTableSize(dht)
  }

  /** the DHT routing table's size when the record was last published */
  private routingAtPublish = 0

  /**
   * A record published while this node knew few DHT peers (the mesh's first peers, a node
   * that just joined) was stored on those few, not on the peers closest to its keys: it is
   * published again each time the routing table has doubled since. A mesh that keeps growing
   * moves the K closest peers of every key; a routing table holds about K·log2(N/K) peers, so
   * this is O(log N) publications per node in its lifetime (1 → 2 → … → 160 at 300 peers), on
   * top of RECORD_REFRESH_MS. (Stopping at K = 20, 94 % of the records of a 100-peer mesh
   * were found 6 min after its start, before the first refresh; bench/scale.json has now.)
   */
  private readonly onGrowth = (): void => {
    if (this.timer == null) return
    const now = routingTableSize(this.node.services.dht)
    if (now >= Math.max(1, 2 * this.routingAtPublish)) this.tick()
  }

  /**
   * Serves /meshllm/record: the last published envelope, one length-prefixed message, then the
   * stream closes. A router that knows a provider reads its record from the expert itself in
   * one round trip on the connection it will use, instead of a DHT lookup (a few round trips
   * to other peers); the DHT stays the fallback. Nothing is signed per request.
   */
  async serveRecord (): Promise<void> {
    await this.node.handle(RECORD_PROTOCOL, (stream) => {
      const envelope = this.lastEnvelope
      // the work lives as long as the stream, and RECORD_STREAM_MS at most
      const lifetime = streamLifetime(stream)
      const signal = AbortSignal.any([lifetime.signal, AbortSignal.timeout(RECORD_STREAM_MS)])
      void (async () => {
        if (envelope == null) throw new Error('no record published yet')
        const lp = lpStream(stream, lengthPrefixOptions(MAX_RECORD_BYTES))
        await lp.write(envelope, { signal })
        await stream.close({ signal })
      })().catch(err => { stream.abort(asError(err)) }).finally(lifetime.dispose)
    }, { maxInboundStreams: 16, maxOutboundStreams: 1, runOnLimitedConnection: true })
  }

  async unserveRecord (): Promise<void> {
    await this.node.unhandle(RECORD_PROTOCOL).catch(() => {})
  }

  start (): void {
    this.timer = setTimeout(this.tick, this.nextRefreshMs())
    this.growth = setInterval(this.onGrowth, GROWTH_CHECK_MS)
    this.growth.unref()
    // the node's addresses changed (a relay reservation gained or lost, a port mapped): the
    // record follows within ADDRESS_CHANGE_DELAY_MS instead of at the next refresh
    this.node.addEventListener('self:peer:update', this.onAddresses)
  }

  stop (): void {
    clearInterval(this.growth)
    clearTimeout(this.timer)
    this.timer = undefined
    clearTimeout(this.soon)
    this.soon = undefined
    this.node.removeEventListener('self:peer:update', this.onAddresses)
  }

  private soon?: NodeJS.Timeout
  private growth?: NodeJS.Timeout
  private publishing = false

  /**
   * refreshMs ± 20 % at random: peers that started together (a host restarted, a harness) do
   * not re-publish together (at 200 peers, 50 that joined within a minute doubled their
   * process's CPU for that minute every 10 min); never past the TTL's half
   */
  private nextRefreshMs (): number {
    return Math.min(Math.round(this.refreshMs * (0.8 + 0.4 * Math.random())), Math.floor(this.ttlMs / 2))
  }

  private readonly tick = (): void => {
    if (this.publishing) return
    this.publishing = true
    clearTimeout(this.timer)
    this.publish().catch(err => this.log.error('advertise failed: %e', err)).finally(() => {
      this.publishing = false
      if (this.timer != null) this.timer = setTimeout(this.tick, this.nextRefreshMs())
    })
  }

  private readonly onAddresses = (): void => {
    if (this.timer == null) return
    const listed = new Set((this.lastRecord?.addrs ?? []).map(a => a.toString()))
    const now = this.node.getMultiaddrs().map(a => a.decapsulateCode(421).toString())
    if (now.length === listed.size && now.every(a => listed.has(a))) return
    clearTimeout(this.soon)
    this.soon = setTimeout(this.tick, ADDRESS_CHANGE_DELAY_MS)
  }
}

/** a /meshllm/record stream's whole life (ms) */
export const RECORD_STREAM_MS = 5_000

/** how often the routing table's growth is checked (a local read, no traffic) */
const GROWTH_CHECK_MS = 5_000

/** how soon a changed address set is re-advertised (ms; several changes in a row are one publication) */
export const ADDRESS_CHANGE_DELAY_MS = 1_000

/** ExpertAdvertiser was given a key that is not its node's identity */
export class WrongIdentityKeyError extends Error {
  static override name = 'WrongIdentityKeyError'
  override name = 'WrongIdentityKeyError'
}
