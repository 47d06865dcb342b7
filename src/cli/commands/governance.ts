/** `meshllm governance init|show` (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { int, required, str, strs, type Command, type Values } from '../args.js'
import { KEYHOLDER_DEFAULTS } from '../defaults.js'
import { BOOTSTRAP, GOVERNANCE, JSON_OUT } from './shared.js'

const init: Command = {
  command: 'init',
  describe: 'write a new governance file: mesh id, keyholders, default thresholds',
  builder: (y: Argv) => y.options({
    keyholder: required(strs('a keyholder\'s public key (meshllm keys generate prints it)')),
    out: required(str('the governance file to create (never replaced)')),
    'mesh-id': str('the mesh\'s id', { defaultDescription: 'meshllm-<time in base 36>' }),
    'review-hours': int('review period of deploy-major motions, hours', 0, KEYHOLDER_DEFAULTS.maxReviewHours, { defaultDescription: String(KEYHOLDER_DEFAULTS.reviewHours) })
  }),
  handler: async (argv: Values) => {
    const { governanceInit } = await import('../governance-cli.js')
    await governanceInit(argv)
  }
}

const show: Command = {
  command: 'show',
  describe: 'print a governance file\'s config and digest; with --bootstrap, the mesh\'s governance state too',
  builder: (y: Argv) => y.options({
    governance: GOVERNANCE,
    bootstrap: BOOTSTRAP,
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { governanceShow } = await import('../governance-cli.js')
    await governanceShow(argv)
  }
}

export const governance: Command = {
  command: 'governance',
  describe: 'create (init) or inspect (show) a governance file',
  builder: (y: Argv) => y.command(init).command(show).demandCommand(1, 'governance needs a subcommand: init | show'),
  handler: () => {}
}
