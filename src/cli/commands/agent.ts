/** `meshllm agent`: the self-prompting agent (implementation: src/agent/cli.ts). */
import type { Argv } from 'yargs'
import { flag, int, required, str, type Command, type Values } from '../args.js'
import { GENERATE_DEFAULTS, GENERATE_LIMITS } from '../../router/options.js'
import { BOOTSTRAP, GOVERNANCE, JSON_OUT, TOKENIZER } from './shared.js'

/** the task database of `agent` and `tasks`: by default the one `join` serves its API from */
export const AGENT_DB = str('task database (SQLite), shared with the API of a `join` on the same file; ":memory:" keeps nothing', { defaultDescription: '$MESHLLM_AGENT_DB, else tasks.sqlite in join\'s default data dir' })

export const agent: Command = {
  command: 'agent',
  describe: 'observe the mesh, prompt it for tasks and gate their actions (one cycle, or a loop until SIGINT/SIGTERM or a HALT)',
  builder: (y: Argv) => y.options({
    once: flag('run one cycle and exit'),
    interval: str('run a cycle every interval, 1m … 24h ("5m", "1h"; a bare number is milliseconds)'),
    bootstrap: required(BOOTSTRAP),
    db: AGENT_DB,
    governance: GOVERNANCE,
    tokenizer: TOKENIZER,
    k: int('experts per token of the agent\'s own generations', 1, GENERATE_LIMITS.k[1], { defaultDescription: String(GENERATE_DEFAULTS.k) }),
    'min-experts': int('experts the mesh needs online: below it the agent reports "too few experts" and the centralised fallback (one model) engages', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: 'K (-k)' }),
    'max-tokens': int('most tokens of one proposal', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: '240' }),
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { agentCommand } = await import('../../agent/cli.js')
    await agentCommand(argv)
  }
}
