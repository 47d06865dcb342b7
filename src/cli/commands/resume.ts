/** `meshllm resume`: lift a HALT with a keyholder quorum (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { int, str, type Command, type Values } from '../args.js'
import { KEYHOLDER_DEFAULTS } from '../defaults.js'
import { PUBLISH } from './shared.js'

export const resume: Command = {
  command: 'resume',
  describe: 'sign a RESUME with the given keys (a quorum: --key per keyholder) and publish it; the mesh stays read-only until a phase vote',
  builder: (y: Argv) => y.options({
    ...PUBLISH,
    lifts: int('version of the HALT to lift', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: 'the HALT in force on the mesh' }),
    reason: str('why the mesh resumes (carried in the signed RESUME)', { defaultDescription: KEYHOLDER_DEFAULTS.resumeReason })
  }),
  handler: async (argv: Values) => {
    const { keyholderCommand } = await import('../governance-cli.js')
    await keyholderCommand('resume', argv)
  }
}
