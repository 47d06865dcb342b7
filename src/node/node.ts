/**
 * Assembles a meshllm libp2p peer: TCP, noise, yamux, identify, ping, kad-dht, gossipsub.
 * Protocol services (expert, router, governance) are added by the caller through `services`.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { KadDHT } from '@libp2p/kad-dht'
import type { GossipSub } from '@libp2p/gossipsub'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { KEEP_ALIVE, type PeerId, type PrivateKey, type ServiceMap } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import { join } from 'node:path'
import type { Registry } from 'prom-client'
import { PeerBlocklist } from './blocklist.js'
import { assertDhtInternals, onRoutingTableAdd, removeFromRoutingTable, routingTableSize } from './dht-internals.js'
import { BOOTSTRAP_KEEP_ALIVE_MS, CONNECTION_PING_MS, DHT_SETTINGS } from './periodic.js'
import { connectionBudget, type ConnectionBudgetInit } from './connection-budget.js'
import { publicListenAddresses, reachParts, trackUpgrades, type ReachOptions, type ReachService } from './reach.js'

/** kad-dht key namespace of expert records (keys "/meshllm/<peer id multihash>") */
const DHT_NAMESPACE = 'meshllm'
import { BadMultiaddrError, NoPeersError, errorMessage, errorCode } from '../util/errors.js'

export const DHT_PROTOCOL = '/meshllm/kad/1.0.0'

export interface MeshNodeOptions {
  /** listen multiaddrs; default /ip4/127.0.0.1/tcp/0 */
  listen?: string[]
  /** addresses to announce instead of the listen addresses (e.g. a proxy in front) */
  announce?: string[]
  bootstrap?: string[]
  /** directory holding the persistent identity (peer.key); omit for an ephemeral identity */
  dataDir?: string
  privateKey?: PrivateKey
  /** DHT server (answers queries, stores records) or client only */
  dhtServer?: boolean
  /**
   * A keyholder tool's node: transports, encryption, muxing and the blocklist only (no
   * identify, ping, DHT or gossipsub, none of which it needs to catch up and push a signed
   * message), so the kill switch does not wait for those to load (≈ 0.5 s). Default false.
   */
  minimal?: boolean
  /** extra libp2p services (protocol handlers) */
  services?: Record<string, (components: any) => unknown>
  /**
   * a prom-client registry for libp2p's own metrics (@libp2p/prometheus-metrics: connections,
   * streams per protocol, kad-dht, gossipsub, … as libp2p_* series), the one src/api/metrics.ts
   * (ApiMetrics `registry`) serves at /metrics. Default: none (libp2p collects no metrics).
   * One node per registry, and one such node per process: @libp2p/prometheus-metrics keeps
   * its metrics in a process-wide table (and clears prom-client's global registry).
   */
  metrics?: Registry
  /**
   * relays, reservations, mDNS, UPnP (src/node/reach.ts; default: none of them). Every full
   * node runs the circuit relay transport and DCUtR whatever this says; a minimal node neither.
   */
  reach?: ReachOptions
  /** how many connections the node keeps, and when an idle one may go (default CONNECTION_BUDGET) */
  connectionBudget?: ConnectionBudgetInit
  /**
   * keep libp2p's peer store (and the DHT's records) in `<dataDir>/peers.db`, so a restarted
   * node knows its peers, not only its bootstrap list (default: true with a dataDir)
   */
  persistPeers?: boolean
}

export type MeshServices = {
  blocklist: PeerBlocklist
  nodeKey: NodeKey
  dht: KadDHT
  identify: unknown
  ping: unknown
  /** absent on a minimal node */
  pubsub?: GossipSub
  /** relay reservations (absent on a minimal node) */
  reach?: ReachService
} & ServiceMap

export type MeshNode = Libp2p<MeshServices & Record<string, any>>

/** Parses a multiaddr, with one clear error for a bad one. */
export function parseMultiaddr (s: string): Multiaddr {
  try {
    return multiaddr(s)
  } catch (err) {
    throw new BadMultiaddrError(`bad multiaddr "${s}": ${errorMessage(err)}`)
  }
}

/** Loads the node's Ed25519 identity from `<dataDir>/peer.key`, creating it on first use. */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  await mkdir(dataDir, { recursive: true })
  const file = join(dataDir, 'peer.key')
  try {
    return privateKeyFromProtobuf(await readFile(file))
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err
  }
  const key = await generateKeyPair('Ed25519')
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600 })
  await rename(tmp, file)
  return key
}

export async function createMeshNode (opts: MeshNodeOptions = {}): Promise<MeshNode> {
  const requested = (opts.listen ?? ['/ip4/127.0.0.1/tcp/0']).map(a => parseMultiaddr(a).toString())
  // a node with a data directory keeps its ports across restarts (peers that knew it reach it again)
  const listen = opts.dataDir != null && opts.minimal !== true ? await reusePorts(requested, opts.dataDir) : requested
  const announce = (opts.announce ?? []).map(a => parseMultiaddr(a).toString())
  // bootstrap addresses are checked before anything starts (connectBootstrap dials them later)
  for (const a of opts.bootstrap ?? []) {
    if (parseMultiaddr(a).getComponents().find(c => c.name === 'p2p') == null) {
      throw new BadMultiaddrError(`bootstrap multiaddr "${a}" has no /p2p/<peer id>`)
    }
  }
  const privateKey = opts.privateKey ?? (opts.dataDir != null ? await loadOrCreateIdentity(opts.dataDir) : await generateKeyPair('Ed25519'))

  const blocklist = new PeerBlocklist()
  const services: Record<string, any> = { blocklist: () => blocklist, nodeKey: (components: { privateKey: PrivateKey }) => new NodeKey(components) }
  // the addresses the transports are bound to (listen.json keeps their ports)
  let bound: BoundAddrs | undefined
  if (opts.dataDir != null && opts.minimal !== true) services.boundAddrs = (components: { transportManager: { getAddrs: () => Multiaddr[] } }) => { bound = { get: () => components.transportManager.getAddrs() }; return bound }
  if (opts.minimal !== true) {
    // loaded here, not at the top: a minimal node never pays for them
    const [{ identify }, { ping }, { kadDHT, passthroughMapper }, { gossipsub }, { validateExpertRecordEntry, selectExpertRecord }] = await Promise.all([
      import('@libp2p/identify'), import('@libp2p/ping'), import('@libp2p/kad-dht'), import('@libp2p/gossipsub'), import('../wire/record.js')
    ])
    Object.assign(services, {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: opts.dhtServer === false,
        // loopback and LAN addresses are real addresses in a meshllm mesh
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: true,
        initialQuerySelfInterval: 200,
        // sized for a mesh, not for IPFS (src/node/periodic.ts)
        alpha: DHT_SETTINGS.alpha,
        disjointPaths: DHT_SETTINGS.disjointPaths,
        querySelfInterval: DHT_SETTINGS.querySelfMs,
        reprovide: { threshold: DHT_SETTINGS.reprovideThresholdMs, interval: DHT_SETTINGS.reprovideIntervalMs, validity: DHT_SETTINGS.providerValidityMs },
        validators: { [DHT_NAMESPACE]: async (key: Uint8Array, value: Uint8Array) => { await validateExpertRecordEntry(key, value) } },
        selectors: { [DHT_NAMESPACE]: (key: Uint8Array, records: Uint8Array[]) => selectExpertRecord(key, records) }
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // governance messages are small; anything bigger is rejected before it is buffered
        maxInboundDataLength: 64 * 1024,
        // many peers of one loopback host are a test mesh, not a Sybil attack: gossipsub's
        // IP-colocation penalty would otherwise push them below the publish threshold
        scoreParams: { IPColocationFactorWhitelist: new Set(['127.0.0.1', '::1']) }
      })
    })
  }
  const blocked = (peer: PeerId): boolean => blocklist.isBlocked(peer.toString())
  const reach = opts.minimal !== true ? await reachParts(opts.reach ?? {}, blocked) : undefined
  if (reach != null) Object.assign(services, reach.services)
  // a node keeps about CONNECTION_BUDGET.target connections, whatever the mesh's size
  if (opts.minimal !== true) services.connectionBudget = connectionBudget(opts.connectionBudget)
  Object.assign(services, opts.services ?? {})
  // loaded only when asked for
  const metrics = opts.metrics != null ? (await import('@libp2p/prometheus-metrics')).prometheusMetrics({ registry: opts.metrics, collectDefaultMetrics: false }) : undefined

  const datastore = opts.minimal !== true && opts.dataDir != null && opts.persistPeers !== false ? await openDatastore(join(opts.dataDir, 'peers.db')) : undefined
  let node
  try {
    node = await createLibp2p({
      privateKey,
      metrics,
      ...(datastore != null ? { datastore } : {}),
      addresses: { listen: [...listen, ...(reach?.listen ?? [])], announce, appendAnnounce: publicListenAddresses(listen.map(a => multiaddr(a))).map(a => a.toString()) },
      transports: [tcp(), ...(reach?.transports ?? [])],
      connectionEncrypters: [noise()],
      // yamux's keep-alive pings every connection every 30 s and acts on nothing (a failed ping
      // is logged); libp2p's connection monitor (CONNECTION_PING_MS) is what closes dead ones
      streamMuxers: [yamux({ enableKeepAlive: false })],
      // addresses are dialled one after another: an unreachable LAN address of a peer behind
      // another NAT must not use up the whole dial before its relay address is tried
      connectionManager: { maxConnections: 512, addressDialTimeout: 3_000, dialTimeout: 15_000 },
      connectionMonitor: { pingInterval: CONNECTION_PING_MS },
      // peers blocked for abuse (PeerBlocklist) are refused right after the handshake, and
      // get no relay reservation or relayed connection from this node
      connectionGater: {
        denyInboundEncryptedConnection: blocked,
        denyOutboundEncryptedConnection: blocked,
        ...(reach?.gater ?? {})
      },
      services
    })
  } catch (err) {
    await datastore?.close()
    throw err
  }
  if (opts.dataDir != null && opts.minimal !== true) {
    const dir = opts.dataDir
    const save = (): void => { savePorts(bound?.get().map(a => a.toString()) ?? [], dir).catch(() => {}) }
    // createLibp2p starts the node unless told not to
    if (node.status === 'started') save()
    else node.addEventListener('start', save, { once: true })
  }
  // libp2p neither opens nor closes a datastore it is given: stopping the node saves it
  if (datastore != null) {
    const stop = node.stop.bind(node)
    node.stop = async () => {
      await stop()
      await datastore.close().catch(() => {})
    }
  }
  const mesh = node as unknown as MeshNode
  if (opts.minimal !== true) {
    keepRoutingTableToDhtServers(mesh)
    trackUpgrades(mesh)
  }
  // libp2p 3 only notes the peers mDNS finds: dial them (a LAN mesh has no bootstrap list)
  const mdns = (mesh.services as Record<string, any>).mdns as { addEventListener: (type: 'peer', cb: (e: CustomEvent<{ id: PeerId }>) => void) => void } | undefined
  mdns?.addEventListener('peer', (e) => {
    const peer = e.detail.id
    if (peer.equals(mesh.peerId) || mesh.getConnections(peer).length > 0 || mesh.status !== 'started') return
    mesh.dial(peer, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
  })
  return mesh
}

interface BoundAddrs { get: () => Multiaddr[] }

/** where a node keeps the TCP ports it listened on */
const PORTS_FILE = 'listen.json'

/**
 * Listen addresses with port 0 get the port this data directory's node listened on last time
 * on the same IP, when that port is free now (else 0 again: a new port).
 */
async function reusePorts (listen: string[], dataDir: string): Promise<string[]> {
  let saved: string[] = []
  try {
    const json = JSON.parse(await readFile(join(dataDir, PORTS_FILE), 'utf8'))
    if (Array.isArray(json.addrs)) saved = json.addrs.filter((a: unknown): a is string => typeof a === 'string').slice(0, 32)
  } catch {}
  const out: string[] = []
  for (const a of listen) {
    const ma = multiaddr(a)
    const parts = ma.getComponents()
    const ip = parts.find(c => c.name === 'ip4' || c.name === 'ip6')
    const tcpPart = parts.find(c => c.name === 'tcp')
    if (ip?.value == null || tcpPart?.value !== '0' || parts.length !== 2) { out.push(a); continue }
    const before = saved.map(s => { try { return multiaddr(s).getComponents() } catch { return [] } })
      .find(c => c.length === 2 && c[0].name === ip.name && c[0].value === ip.value && c[1].name === 'tcp')
    const port = Number(before?.[1].value)
    out.push(Number.isInteger(port) && port > 0 && port < 65536 && await portFree(ip.value, port) ? `/${ip.name}/${ip.value}/tcp/${port}` : a)
  }
  return out
}

async function portFree (host: string, port: number): Promise<boolean> {
  const { createServer } = await import('node:net')
  return await new Promise(resolve => {
    const srv = createServer()
    srv.once('error', () => { resolve(false) })
    srv.listen({ host, port, exclusive: true }, () => { srv.close(() => { resolve(true) }) })
  })
}

async function savePorts (addrs: string[], dataDir: string): Promise<void> {
  const file = join(dataDir, PORTS_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, JSON.stringify({ addrs: addrs.filter(a => a.includes('/tcp/')).slice(0, 32) }))
  await rename(tmp, file)
}

/** libp2p's peer store and the DHT's records: in memory, saved in the data directory (snapshot-datastore.ts) */
async function openDatastore (path: string): Promise<import('./snapshot-datastore.js').SnapshotDatastore> {
  const { SnapshotDatastore } = await import('./snapshot-datastore.js')
  return await SnapshotDatastore.open(path)
}

/**
 * kad-dht (v16) adds every peer it hears of in a DHT response (providers included) to the
 * routing table once the peer answers a libp2p *ping*, whether or not it serves the DHT
 * protocol. Expert providers in client mode (routers, experts behind NAT, or 100 Sybil
 * identities) then fill the table, and a lookup whose closest peers cannot answer DHT
 * queries ends empty: an eclipse by accident or by design. So: a peer that identify shows
 * without our DHT protocol is removed from the routing table, when it is added and when it
 * identifies.
 */
function keepRoutingTableToDhtServers (node: MeshNode): void {
  const dht = node.services.dht
  // every kad-dht internal this project reads, checked once: a dependency change fails here
  assertDhtInternals(dht)
  const drop = (peerId: PeerId): void => { removeFromRoutingTable(dht, peerId).catch(() => {}) }
  onRoutingTableAdd(dht, (peerId) => {
    node.peerStore.get(peerId).then(peer => {
      // protocols empty: not identified yet; the peer:identify listener decides
      if (peer.protocols.length > 0 && !peer.protocols.includes(DHT_PROTOCOL)) drop(peerId)
    }, () => {})
  })
  node.addEventListener('peer:identify', (evt) => {
    if (!evt.detail.protocols.includes(DHT_PROTOCOL)) drop(evt.detail.peerId)
  })
}

/**
 * libp2p service holding the node's own identity key (libp2p's `Components.privateKey`), for
 * what the node signs as itself: its expert record. Never a governance key.
 */
export class NodeKey {
  readonly [Symbol.toStringTag] = '@meshllm/node-key'
  readonly privateKey: PrivateKey
  constructor (components: { privateKey: PrivateKey }) {
    this.privateKey = components.privateKey
  }
}

/** the node was not made by createMeshNode (it has no NodeKey service) */
export class NotAMeshNodeError extends Error {
  static override name = 'NotAMeshNodeError'
  override name = 'NotAMeshNodeError'
}

/**
 * The node's private key (its NodeKey service). Prefer passing the key explicitly
 * (`createMeshNode({ privateKey })` and `ExpertAdvertiser`'s `privateKey`).
 */
export function nodePrivateKey (node: MeshNode): PrivateKey {
  const k = (node.services.nodeKey as NodeKey | undefined)?.privateKey
  if (k == null) throw new NotAMeshNodeError('not a node created by createMeshNode (no nodeKey service)')
  return k
}

/**
 * Dials the bootstrap peers; resolves once at least one is connected (or there are none).
 * Throws NoPeersError when none answers within `timeoutMs`.
 */
export async function connectBootstrap (node: MeshNode, addrs: string[], timeoutMs = 10_000, options: { waitForDht?: boolean } = {}): Promise<number> {
  if (addrs.length === 0) return 0
  const targets = addrs.map(a => parseMultiaddr(a))
  const deadline = Date.now() + timeoutMs
  let lastErr: any
  while (Date.now() < deadline) {
    const results = await Promise.allSettled(targets.map(async ma => node.dial(ma, { signal: AbortSignal.timeout(Math.max(500, deadline - Date.now())) })))
    const ok = results.filter(r => r.status === 'fulfilled').length
    // libp2p redials a keep-alive peer when its connection drops (a bootstrap node restarting)
    // while the node finds its own neighbours; past BOOTSTRAP_KEEP_ALIVE_MS the tag lapses, so
    // a bootstrap node's connection budget may close the connection for good (were it kept,
    // every peer of the mesh would hold one to the bootstrap node, and redial it when closed)
    for (const r of results) if (r.status === 'fulfilled') await node.peerStore.merge(r.value.remotePeer, { tags: { [KEEP_ALIVE]: { value: 1, ttl: BOOTSTRAP_KEEP_ALIVE_MS } } }).catch(() => {})
    if (ok > 0) {
      const dhtReady = options.waitForDht !== false && await waitForDhtPeers(node, Math.max(1_000, deadline - Date.now()))
      // relay reservations once the DHT has peers (ReachService: never with an empty routing table)
      if (dhtReady) await node.services.reach?.reserve().catch(() => {})
      return ok
    }
    lastErr = results.find(r => r.status === 'rejected')
    await new Promise(resolve => setTimeout(resolve, 250))
  }
  throw new NoPeersError(`could not reach any bootstrap peer (${addrs.join(', ')}): ${lastErr?.reason?.message ?? 'timeout'}`)
}

/**
 * Waits until the DHT routing table holds at least one peer (identify has run and the
 * peer speaks our DHT protocol), so the first query does not run against an empty table.
 */
export async function waitForDhtPeers (node: MeshNode, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  const dht = node.services.dht as KadDHT | undefined
  if (dht == null) return false
  while (routingTableSize(dht) === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
  return routingTableSize(dht) > 0
}
