/** `meshllm submit <file>`: publish a message signed offline (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { required, type Command, type Values } from '../args.js'
import { BOOTSTRAP, GOVERNANCE, JSON_OUT } from './shared.js'

export const submit: Command = {
  command: 'submit <file>',
  describe: 'publish a signed keyholder message (meshllm sign) to the mesh',
  builder: (y: Argv) => y
    .positional('file', { describe: 'the signed message file', type: 'string' })
    .options({
      bootstrap: required(BOOTSTRAP),
      governance: GOVERNANCE,
      json: JSON_OUT
    }),
  handler: async (argv: Values) => {
    const { submitCommand } = await import('../governance-cli.js')
    await submitCommand(argv)
  }
}
