/**
 * A Sybil attacker for tests: one machine (one loaded model, one IP address) presenting `n`
 * expert identities, each a real libp2p node serving /meshllm/infer from the shared model and
 * advertising a signed record that claims `capacityFactor` × the measured speed.
 */
import { defaultLogger } from '@libp2p/logger'
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
}

export interface Sybils {
  ids: string[]
  nodes: MeshNode[]
  host: ModelHost
  claimedTokensPerSecond: number
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
      await Promise.all(Array.from({ length: Math.min(20, n - i) }, async () => {
        const node = await createMeshNode({ listen: [`/ip4/${opts.ip ?? '127.0.9.9'}/tcp/0`], dhtServer: false, services: { infer: inferService({ host }) } })
        nodes.push(node)
        await node.start()
        await connectBootstrap(node, opts.bootstrap)
        const adv = new ExpertAdvertiser(node, host, { tokensPerSecond: claimed, ttlMs: 300_000 }, log)
        advertisers.push(adv)
        await adv.publish()
      }))
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { ids: nodes.map(nd => nd.peerId.toString()), nodes, host, claimedTokensPerSecond: claimed, stop }
}
