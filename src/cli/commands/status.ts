/** `meshllm status`: the experts the mesh knows (implementation: src/cli/status.ts). */
import type { Argv } from 'yargs'
import { required, type Command, type Values } from '../args.js'
import { BOOTSTRAP, JSON_OUT, TOKENIZER } from './shared.js'

export const status: Command = {
  command: 'status',
  describe: 'list the experts of the mesh with model, speed, free slots and health',
  builder: (y: Argv) => y.options({
    bootstrap: required(BOOTSTRAP),
    tokenizer: TOKENIZER,
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { statusCommand } = await import('../status.js')
    await statusCommand(argv)
  }
}
