/** `meshllm demo`: a local 3-expert mesh and one generation (implementation: src/cli/demo.ts). */
import type { Argv } from 'yargs'
import { int, str, type Command, type Values } from '../args.js'
import { GENERATE_LIMITS as L } from '../../router/options.js'
import { DEMO_DEFAULTS as DEMO } from '../defaults.js'

export const demo: Command = {
  command: 'demo',
  describe: 'start 3 bundled experts as separate processes, generate once showing which experts served each token, stop',
  builder: (y: Argv) => y.options({
    'max-tokens': int('tokens to generate', ...L.maxTokens, { defaultDescription: String(DEMO.maxTokens) }),
    k: int('experts per token', ...L.k, { defaultDescription: String(DEMO.k) }),
    prompt: str('the prompt', { defaultDescription: DEMO.prompt }),
    seed: int('sampling seed', ...L.seed, { defaultDescription: 'random' })
  }),
  handler: async (argv: Values) => {
    const { runDemo } = await import('../demo.js')
    await runDemo(argv)
  }
}
