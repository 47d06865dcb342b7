/** `meshllm status`: the experts the mesh knows (implementation: src/cli/status.ts). */
import type { Argv } from 'yargs'
import { int, required, type Command, type Values } from '../args.js'
import { BOOTSTRAP, JSON_OUT, TOKENIZER } from './shared.js'

export const status: Command = {
  command: 'status',
  describe: 'list the experts of the mesh with model, speed, free slots and health, a page at a time',
  builder: (y: Argv) => y.options({
    bootstrap: required(BOOTSTRAP),
    tokenizer: TOKENIZER,
    page: int('which page of the experts seen (sorted by peer id)', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: '1' }),
    'page-size': int('experts per page: records fetched and pinged', 1, 500, { defaultDescription: '50' }),
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { statusCommand } = await import('../status.js')
    await statusCommand(argv)
  }
}
