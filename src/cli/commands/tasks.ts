/** `meshllm tasks`: the node's tasks, the agent's and the API's (implementation: src/agent/cli.ts). */
import type { Argv } from 'yargs'
import { int, str, type Command, type Values } from '../args.js'
import { AGENT_DB } from './agent.js'
import { JSON_OUT } from './shared.js'
import { TASKS_LIMIT_DEFAULT } from '../defaults.js'
// the vocabulary only (src/tasks/model.ts loads no node:sqlite)
import { TASK_STATES } from '../../tasks/model.js'

export const tasks: Command = {
  command: 'tasks',
  describe: 'list the node\'s tasks: those the agent recorded and those submitted through the API',
  builder: (y: Argv) => y.options({
    db: AGENT_DB,
    state: str('only tasks in this state (the agent\'s view of status and approval: docs/agent.md)', { choices: [...TASK_STATES] }),
    limit: int('most tasks to list', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: String(TASKS_LIMIT_DEFAULT) }),
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { tasksCommand } = await import('../../agent/cli.js')
    await tasksCommand(argv)
  }
}
