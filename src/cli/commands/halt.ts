/** `meshllm halt`: the kill switch (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { str, type Command, type Values } from '../args.js'
import { KEYHOLDER_DEFAULTS } from '../defaults.js'
import { PUBLISH } from './shared.js'

export const halt: Command = {
  command: 'halt',
  describe: 'sign a HALT with your key and publish it: every node stops serving and routing at once',
  builder: (y: Argv) => y.options({
    ...PUBLISH,
    reason: str('why (shown by every node and in every halted generation)', { defaultDescription: KEYHOLDER_DEFAULTS.haltReason })
  }),
  handler: async (argv: Values) => {
    const { keyholderCommand } = await import('../governance-cli.js')
    await keyholderCommand('halt', argv)
  }
}
