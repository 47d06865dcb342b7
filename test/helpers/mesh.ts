/** The two-honest-experts mesh several integration and adversarial specs start from. */
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'

/** the peer id of a `/…/p2p/<id>` multiaddr */
export function peerOf (addr: string): string {
  return addr.split('/p2p/')[1]
}

export interface TwoExperts {
  a: SpawnedExpert
  b: SpawnedExpert
  /** the two honest experts' peer ids */
  honest: () => string[]
  stop: () => Promise<void>
}

/** Two `meshllm join` processes (8 sessions each), b bootstrapped to a. */
export async function startTwoExperts (models: [string, string] = ['meshtest-a', 'meshtest-b']): Promise<TwoExperts> {
  const a = await spawnExpert(models[0], ['--max-sessions', '8'])
  let b: SpawnedExpert
  try {
    b = await spawnExpert(models[1], ['--bootstrap', a.addr, '--max-sessions', '8'])
  } catch (err) {
    await stopExpert(a)
    throw err
  }
  return { a, b, honest: () => [peerOf(a.addr), peerOf(b.addr)], stop: async () => { await Promise.all([a, b].map(stopExpert)) } }
}

export interface RouterNode {
  /** a client-mode node connected to the bootstrap peers */
  node: MeshNode
  tokenizer: RouterTokenizer
  stop: () => Promise<void>
}

/** A router's node (DHT client, no listen address) and the bundled tokenizer. */
export async function startRouterNode (bootstrap: string[]): Promise<RouterNode> {
  const node = await createMeshNode({ listen: [], dhtServer: false })
  await node.start()
  await connectBootstrap(node, bootstrap)
  const tokenizer = await RouterTokenizer.load('meshtest-c')
  return { node, tokenizer, stop: async () => { await tokenizer.close(); await node.stop() } }
}
