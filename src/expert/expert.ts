/** Starts an expert peer: model host + libp2p node serving /meshllm/infer + DHT advertisement. */
import { defaultLogger } from '@libp2p/logger'
import type { Registry } from 'prom-client'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMeshNode, connectBootstrap, loadOrCreateIdentity, type MeshNode } from '../node/node.js'
import { ModelHost, type ModelHostOptions } from './model-host.js'
import { InferService } from './infer-service.js'
import { ExpertAdvertiser } from './advertise.js'
import { resolveModel } from './resolve.js'
import { isCircuit, type ReachOptions } from '../node/reach.js'

export interface ExpertOptions extends Omit<ModelHostOptions, 'modelPath'> {
  /** path, bundled name (meshtest-a) or URI */
  model: string
  listen?: string[]
  announce?: string[]
  bootstrap?: string[]
  dataDir?: string
  progress?: boolean
  idleTimeoutMs?: number
  recordTtlMs?: number
  recordRefreshMs?: number
  haltReason?: () => string | undefined
  /** the signed HALT envelope in force, sent with HALTED answers (InferServiceInit.haltEnvelope) */
  haltEnvelope?: () => Uint8Array | undefined
  /** sessions one remote peer is sure of (InferServiceInit.maxSessionsPerPeer, default 2; more on idle slots) */
  maxSessionsPerPeer?: number
  /** how long an open waits for a free slot before BUSY (ms, InferServiceInit.queueTimeoutMs, default 10 s; 0: no queue) */
  queueTimeoutMs?: number
  /** tokens one session may evaluate in all, rolled-back ones included (InferServiceInit.maxSessionTokens) */
  maxSessionTokens?: number
  /** longest session (ms, InferServiceInit.maxSessionMs, default 30 min) */
  maxSessionMs?: number
  /**
   * runs after the node started and reached its bootstrap peers, before /meshllm/infer is
   * registered and the record advertised (join: governance catch-up, so a node never serves
   * before it knows whether the mesh is halted)
   */
  beforeServe?: (node: MeshNode) => Promise<void>
  /** further libp2p services for the node (e.g. the generate service of a routing peer) */
  extraServices?: Record<string, (components: any) => unknown>
  /** prom-client registry for libp2p's own metrics (MeshNodeOptions.metrics) */
  metrics?: Registry
  /** relays, reservations, mDNS, UPnP (MeshNodeOptions.reach; default none) */
  reach?: ReachOptions
  /** serve the DHT (default true; an expert behind NAT, reached through a relay, is a client) */
  dhtServer?: boolean
  /**
   * a model host already loaded in this process, shared with other experts of the process
   * (the scale harness, bench/scale-host.ts: many full nodes, one copy of the weights and one
   * session pool). The expert neither loads nor closes it; `model` must name the same model.
   * Default: the expert loads its own.
   */
  host?: ModelHost
}

export interface Expert {
  node: MeshNode
  host: ModelHost
  service: InferService
  advertiser: ExpertAdvertiser
  tokensPerSecond: number
  stop: () => Promise<void>
}

/** how long an expert behind NAT waits for its first relay reservation before advertising anyway (ms) */
export const RELAY_ADDRESS_WAIT_MS = 15_000

/** resolves once the node has a /p2p-circuit address (a relay reservation), or after `ms` */
async function waitForCircuitAddress (node: MeshNode, ms: number): Promise<boolean> {
  const has = (): boolean => node.getMultiaddrs().some(isCircuit)
  if (has()) return true
  return await new Promise<boolean>(resolve => {
    const done = (): void => { clearTimeout(timer); node.removeEventListener('self:peer:update', check); resolve(has()) }
    const check = (): void => { if (has()) done() }
    const timer = setTimeout(done, ms)
    node.addEventListener('self:peer:update', check)
  })
}

export async function startExpert (opts: ExpertOptions): Promise<Expert> {
  const log = defaultLogger().forComponent('meshllm:expert')
  const shared = opts.host
  const host = shared ?? await ModelHost.load({ ...opts, modelPath: await resolveModel(opts.model, { progress: opts.progress }) })
  const closeHost = async (): Promise<void> => { if (shared == null) await host.close() }
  let node: MeshNode | undefined
  try {
    const tokensPerSecond = shared != null ? (sharedSpeed.get(shared) ?? await measureShared(shared)) : await host.measureSpeed()
    log('model %s loaded: %d tokens/s, %d threads, gpu %s', host.summary.name, tokensPerSecond.toFixed(1), host.threads, host.gpu)
    const privateKey = opts.dataDir != null ? await loadOrCreateIdentity(opts.dataDir) : await generateKeyPair('Ed25519')
    node = await createMeshNode({
      privateKey,
      listen: opts.listen,
      announce: opts.announce,
      bootstrap: opts.bootstrap,
      dataDir: opts.dataDir,
      metrics: opts.metrics,
      reach: opts.reach,
      dhtServer: opts.dhtServer,
      services: { ...(opts.extraServices ?? {}) }
    })
    await node.start()
    if ((opts.bootstrap ?? []).length > 0) await connectBootstrap(node, opts.bootstrap ?? [])
    // e.g. governance catch-up: nothing is served or advertised before it is done
    await opts.beforeServe?.(node)
    // /meshllm/infer is registered only now: the node's handle/unhandle are its registrar's
    const service = new InferService({ registrar: node, logger: node.logger, peerId: node.peerId }, { host, idleTimeoutMs: opts.idleTimeoutMs, haltReason: opts.haltReason, haltEnvelope: opts.haltEnvelope, maxSessionsPerPeer: opts.maxSessionsPerPeer, queueTimeoutMs: opts.queueTimeoutMs, maxSessionTokens: opts.maxSessionTokens, maxSessionMs: opts.maxSessionMs })
    await service.start()
    const advertiser = new ExpertAdvertiser(node, host, { privateKey, tokensPerSecond, ttlMs: opts.recordTtlMs, refreshMs: opts.recordRefreshMs }, log)
    // behind NAT: the record should carry the relay address routers can dial
    if ((opts.reach?.relayReservations ?? 0) > 0) await waitForCircuitAddress(node, RELAY_ADDRESS_WAIT_MS)
    await advertiser.publish()
    await advertiser.serveRecord()
    advertiser.start()
    const n = node
    return {
      node: n,
      host,
      service,
      advertiser,
      tokensPerSecond,
      stop: async () => {
        advertiser.stop()
        await advertiser.unserveRecord()
        await service.stop().catch(() => {})
        await n.stop()
        await closeHost()
      }
    }
  } catch (err) {
    if (node != null) await Promise.resolve(node.stop()).catch(() => {})
    await closeHost().catch(() => {})
    throw err
  }
}

/** a shared host's speed, measured once (every expert on it advertises the same) */
const sharedSpeed = new WeakMap<ModelHost, number>()
async function measureShared (host: ModelHost): Promise<number> {
  const tps = await host.measureSpeed()
  sharedSpeed.set(host, tps)
  return tps
}
