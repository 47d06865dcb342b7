/** `meshllm phase <0-4>` (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import type { Command, Values } from '../args.js'
import { PUBLISH } from './shared.js'

export const phase: Command = {
  command: 'phase <phase>',
  describe: 'sign a PHASE change (all keyholders: --key each) and publish it; also ends read-only after a RESUME',
  builder: (y: Argv) => y
    .positional('phase', { describe: 'the rollout phase, 0–4', type: 'string' })
    .options(PUBLISH),
  handler: async (argv: Values) => {
    const { keyholderCommand } = await import('../governance-cli.js')
    await keyholderCommand('phase', argv)
  }
}
