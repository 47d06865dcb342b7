/** `meshllm vote <motion id>` (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { flag, type Command, type Values } from '../args.js'
import { PUBLISH } from './shared.js'

export const vote: Command = {
  command: 'vote <motion>',
  describe: 'sign a VOTE on a motion with your key and publish it',
  builder: (y: Argv) => y
    .positional('motion', { describe: 'the motion id (64 hex digits)', type: 'string' })
    .options({
      ...PUBLISH,
      approve: flag('vote for the motion (exactly one of --approve / --reject)'),
      reject: flag('vote against the motion')
    }),
  handler: async (argv: Values) => {
    const { keyholderCommand } = await import('../governance-cli.js')
    await keyholderCommand('vote', argv)
  }
}
