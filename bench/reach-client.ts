/**
 * The router side of `npm run bench:reach` (bench/reach.ts), run inside a network namespace:
 * joins the mesh, waits for the given experts, then runs generations restricted to them and
 * prints one JSON line: the first (cold: connections and sessions set up) and the warm runs'
 * time to first token and tokens/s, and how each expert ended up reached.
 *
 *   node dist/bench/reach-client.js '{"bootstrap":[…],"experts":[…],"runs":5,"tokens":64,"listen":[…],"announce":[…]}'
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { connectBootstrap, createMeshNode } from '../src/node/node.js'
import { reachOf } from '../src/node/reach.js'
import { Router } from '../src/router/router.js'
import { RouterTokenizer } from '../src/router/tokenizer.js'

interface Args { bootstrap: string[], experts: string[], runs: number, tokens: number, listen?: string[], announce?: string[] }

const a = JSON.parse(process.argv[2]) as Args
const node = await createMeshNode({ listen: a.listen ?? [], announce: a.announce, dhtServer: false })
await node.start()
const tokenizer = await RouterTokenizer.load('meshtest-c')
try {
  await connectBootstrap(node, a.bootstrap)
  const router = new Router(node, tokenizer)
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    const known = new Set((await router.experts(true)).compatible.map(r => r.peerId.toString()))
    if (a.experts.every(e => known.has(e))) break
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  const runs: Array<{ ttftMs: number, tokensPerSecond: number, experts: number }> = []
  for (let i = 0; i < a.runs; i++) {
    const t0 = performance.now()
    let first = 0
    const r = await router.generate('The kernel', { k: a.experts.length, experts: a.experts, maxTokens: a.tokens, temperature: 0.8, seed: i + 1, ignoreEos: true, onToken: () => { if (first === 0) first = performance.now() - t0 } })
    const steady = r.tokens > 1 ? (r.tokens - 1) / ((r.elapsedMs - first) / 1000) : 0
    runs.push({ ttftMs: Math.round(first), tokensPerSecond: Math.round(steady * 10) / 10, experts: r.experts.length })
  }
  const reach = Object.fromEntries(a.experts.map(e => [e, reachOf(node, peerIdFromString(e)) ?? 'closed']))
  process.stdout.write(JSON.stringify({ runs, reach }) + '\n')
} finally {
  await tokenizer.close()
  await node.stop()
}
