/** `meshllm tasks`: the agent's stored tasks (implementation: src/agent/cli.ts). */
import type { Argv } from 'yargs'
import { int, str, type Command, type Values } from '../args.js'
import { AGENT_DB } from './agent.js'
import { JSON_OUT } from './shared.js'
import { TASKS_LIMIT_DEFAULT } from '../defaults.js'

/** TASK_STATES of src/agent/store.ts (not imported here: it loads node:sqlite; test/unit/cli-help.spec.ts checks they agree) */
export const TASK_STATE_CHOICES = ['queued', 'executed', 'awaiting_review', 'awaiting_quorum', 'blocked', 'rejected']

export const tasks: Command = {
  command: 'tasks',
  describe: 'list the tasks the agent stored',
  builder: (y: Argv) => y.options({
    db: AGENT_DB,
    state: str('only tasks in this state', { choices: TASK_STATE_CHOICES }),
    limit: int('most tasks to list', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: String(TASKS_LIMIT_DEFAULT) }),
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { tasksCommand } = await import('../../agent/cli.js')
    await tasksCommand(argv)
  }
}
