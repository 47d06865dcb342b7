/** `meshllm sign`: offline signature collection (implementation: src/cli/governance-cli.ts). */
import type { Argv } from 'yargs'
import { flag, int, required, str, type Command, type Values } from '../args.js'
import { KEYHOLDER_DEFAULTS as K } from '../defaults.js'
import { GOVERNANCE, KEY } from './shared.js'

export const sign: Command = {
  command: 'sign [kind] [arg]',
  describe: 'create a signed keyholder message in a file (kind), or add your signature to one (--in); publish it with submit',
  builder: (y: Argv) => y
    // `--version` here is the message's version: not the global one
    .version(false)
    .positional('kind', { describe: 'halt | resume | vote | phase (without --in)', type: 'string' })
    .positional('arg', { describe: 'vote: the motion id (64 hex digits); phase: the phase, 0–4', type: 'string' })
    .options({
      key: required(KEY),
      out: required(str('the signed message file to write')),
      in: str('add signatures to this signed message instead of creating one'),
      governance: GOVERNANCE,
      reason: str('halt, resume: why', { defaultDescription: `"${K.haltReason}" / "${K.resumeReason}"` }),
      lifts: int('resume: version of the HALT to lift (required)', 1),
      approve: flag('vote: for the motion (exactly one of --approve / --reject)'),
      reject: flag('vote: against the motion'),
      version: int('the message\'s version: at least this (it is never below the time of signing, in ms; a mesh takes only versions above its own)', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: 'the time of signing, in ms' }),
      'ttl-hours': int('hours the message stays valid', 1, K.maxTtlHours, { defaultDescription: String(K.ttlHours) })
    }),
  handler: async (argv: Values) => {
    const { signCommand } = await import('../governance-cli.js')
    await signCommand(argv)
  }
}
