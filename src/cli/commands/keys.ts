/** `meshllm keys generate`: a new keyholder key (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { str, type Command, type Values } from '../args.js'
import { KEYHOLDER_DEFAULTS } from '../defaults.js'

const generate: Command = {
  command: 'generate',
  describe: 'create a keyholder key file (mode 600) and print its public key',
  builder: (y: Argv) => y.options({
    out: str('write the key to this file', { defaultDescription: '$MESHLLM_HOME/keys/<name>.key, else $XDG_DATA_HOME/meshllm/keys/<name>.key, else ~/.local/share/meshllm/keys/<name>.key (never replaced)' }),
    name: str('name of the key file in the per-user directory (without --out)', { defaultDescription: KEYHOLDER_DEFAULTS.keyName })
  }),
  handler: async (argv: Values) => {
    const { keysGenerate } = await import('../governance-cli.js')
    await keysGenerate(argv)
  }
}

export const keys: Command = {
  command: 'keys',
  describe: 'keyholder keys (generate)',
  builder: (y: Argv) => y.command(generate).demandCommand(1, 'keys needs a subcommand: generate'),
  handler: () => {}
}
