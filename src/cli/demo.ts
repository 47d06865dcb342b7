/**
 * `meshllm demo`: a local mesh of the bundled models in separate processes, one generation
 * at K=3 showing which experts served each token, then everything shuts down.
 */
import { spawnExpert, stopExpert, type SpawnedExpert } from '../peer/spawn.js'
import { createMeshNode, connectBootstrap } from '../node/node.js'
import { Router } from '../router/router.js'
import { RouterTokenizer } from '../router/tokenizer.js'
import { GENERATE_LIMITS } from '../router/options.js'
import { intOption, type Values } from './args.js'
import { DEMO_DEFAULTS } from './defaults.js'

/** options: src/cli/commands/demo.ts */
export async function runDemo (values: Values): Promise<void> {
  const maxTokens = intOption(values['max-tokens'], 'max-tokens', ...GENERATE_LIMITS.maxTokens) ?? DEMO_DEFAULTS.maxTokens
  const k = intOption(values.k, 'k', ...GENERATE_LIMITS.k) ?? DEMO_DEFAULTS.k
  const seed = intOption(values.seed, 'seed', ...GENERATE_LIMITS.seed)
  const prompt: string = values.prompt ?? DEMO_DEFAULTS.prompt
  const experts: SpawnedExpert[] = []
  const out = process.stdout
  try {
    out.write('starting 3 experts (meshtest-a, meshtest-b, meshtest-c) as separate processes…\n')
    const first = await spawnExpert('meshtest-a')
    experts.push(first)
    const rest = await Promise.all(['meshtest-b', 'meshtest-c'].map(async m => spawnExpert(m, ['--bootstrap', first.addr])))
    experts.push(...rest)
    for (const e of experts) out.write(`  ${e.model.padEnd(11)} ${e.addr}\n`)
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, experts.map(e => e.addr))
    const tokenizer = await RouterTokenizer.load('meshtest-c')
    const router = new Router(node, tokenizer)
    // wait until the DHT knows all three
    let found = 0
    for (let i = 0; i < 20 && found < experts.length; i++) {
      found = (await router.experts(true)).compatible.length
      if (found < experts.length) await new Promise(resolve => setTimeout(resolve, 300))
    }
    out.write(`router found ${found} expert(s) on the DHT\n\nprompt: ${prompt}\n\n`)
    const names = new Map<string, string>()
    for (const r of (await router.experts()).compatible) names.set(r.peerId.toString(), r.modelName.replace('meshtest-', ''))
    const perToken: string[] = []
    const result = await router.generate(prompt, {
      k,
      maxTokens,
      temperature: 0.7,
      seed,
      onToken: (t) => {
        out.write(t.text)
        perToken.push(t.experts.map(id => names.get(id) ?? id.slice(-4)).sort().join(''))
      }
    })
    out.write('\n\nexperts per token (a/b/c = meshtest-a/b/c):\n')
    out.write(perToken.join(' ') + '\n\n')
    out.write(`${result.tokens} tokens in ${(result.elapsedMs / 1000).toFixed(2)} s = ${result.tokensPerSecond.toFixed(1)} tokens/s at K=${result.effectiveK}; ${result.bytesPerExpertToken.toFixed(0)} bytes per expert per token\n`)
    await tokenizer.close()
    await node.stop()
  } finally {
    await Promise.all(experts.map(stopExpert))
  }
}
