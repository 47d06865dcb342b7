/**
 * A Sybil attacker for tests: one machine (one loaded model, one IP address) presenting `n`
 * expert identities, each a real libp2p node serving /meshllm/infer from the shared model and
 * advertising a signed record that claims `capacityFactor` × the measured speed. With
 * `fakeFirstAddress`, each record lists first a fake address in a /24 of its own (issue 10 §9:
 * the attack on grouping by record address), then the real one.
 */
import { defaultLogger } from '@libp2p/logger'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Connection, PeerId } from '@libp2p/interface'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { ModelHost } from '../../src/expert/model-host.js'
import { inferService } from '../../src/expert/infer-service.js'
import { ExpertAdvertiser } from '../../src/expert/advertise.js'
import { resolveModel } from '../../src/expert/resolve.js'

export interface SybilOptions {
  model?: string
  /** the one address every identity listens on (default 127.0.9.9, another /24 than the honest experts' 127.0.0.1: Linux routes all of 127/8 to lo) */
  ip?: string
  bootstrap: string[]
  capacityFactor?: number
  /**
   * each record lists first a fake address in a /24 of its own, `fakeAddress(i)`, on which
   * nothing listens (loopback only: 127.<100 + ⌊i/256⌋>.<i mod 256>.1, the identity's real
   * port; nothing is ever sent off this machine), then its real address. Default false.
   */
  fakeFirstAddress?: boolean
}

/** identity `i`'s fake first address (fakeFirstAddress): its own /24 in 127/8, nothing listening */
export function fakeAddress (i: number, port: number): Multiaddr {
  return multiaddr(`/ip4/127.${100 + (i >> 8)}.${i & 255}.1/tcp/${port}`)
}

export interface Sybils {
  ids: string[]
  nodes: MeshNode[]
  host: ModelHost
  claimedTokensPerSecond: number
  /**
   * Every identity hangs up on `peer` (a router), now and whenever it connects again, until
   * the returned function is called: an attacker keeps no idle connection with a router, so
   * that the router knows it only by what its record claims. Resolves once the current
   * connections are closed.
   */
  hangUpOn: (peer: PeerId) => Promise<() => void>
  stop: () => Promise<void>
}

export async function startSybils (n: number, opts: SybilOptions): Promise<Sybils> {
  const log = defaultLogger().forComponent('meshllm:test:sybil')
  const host = await ModelHost.load({ modelPath: await resolveModel(opts.model ?? 'meshtest-c'), maxSessions: 16, threads: 1 })
  const claimed = (await host.measureSpeed()) * (opts.capacityFactor ?? 10)
  const nodes: MeshNode[] = []
  const advertisers: ExpertAdvertiser[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map(async nd => { await Promise.resolve(nd.stop()).catch(() => {}) }))
    await host.close().catch(() => {})
  }
  try {
    for (let i = 0; i < n; i += 20) {
      await Promise.all(Array.from({ length: Math.min(20, n - i) }, async (_, j) => {
        const node = await createMeshNode({ listen: [`/ip4/${opts.ip ?? '127.0.9.9'}/tcp/0`], dhtServer: false, services: { infer: inferService({ host }) } })
        nodes.push(node)
        await node.start()
        await connectBootstrap(node, opts.bootstrap)
        const real = node.getMultiaddrs()
        const addrs = opts.fakeFirstAddress === true ? [fakeAddress(i + j, Number(real[0].getComponents().find(c => c.name === 'tcp')?.value)), ...real] : undefined
        const adv = new ExpertAdvertiser(node, host, { tokensPerSecond: claimed, ttlMs: 300_000, addrs }, log)
        advertisers.push(adv)
        await adv.publish()
      }))
    }
  } catch (err) {
    await stop()
    throw err
  }
  const hangUpOn = async (peer: PeerId): Promise<() => void> => {
    const onOpen = (e: CustomEvent<Connection>): void => { if (e.detail.remotePeer.equals(peer)) e.detail.close().catch(() => {}) }
    for (const nd of nodes) nd.addEventListener('connection:open', onOpen)
    await Promise.all(nodes.map(async nd => { await nd.hangUp(peer).catch(() => {}) }))
    return () => { for (const nd of nodes) nd.removeEventListener('connection:open', onOpen) }
  }
  return { ids: nodes.map(nd => nd.peerId.toString()), nodes, host, claimedTokensPerSecond: claimed, hangUpOn, stop }
}
