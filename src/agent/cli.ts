/**
 * `meshllm agent` and `meshllm tasks` (options and --help: src/cli/commands/agent.ts, tasks.ts):
 *
 *   meshllm agent --once --bootstrap <multiaddr>… [--json] [--db <file>] [--governance <file>] [-k <n>] [--min-experts <n>] [--max-tokens <n>] [--tokenizer <spec>]
 *   meshllm agent --interval <1m…24h> --bootstrap <multiaddr>… [same options]     (runs until SIGINT/SIGTERM or a HALT)
 *   meshllm tasks [--db <file>] [--state <state>] [--limit <n>] [--json]
 *
 * The database defaults to $MESHLLM_AGENT_DB, else the task database of `meshllm join`'s default
 * data directory (`<data dir>/tasks.sqlite`): one table for the agent's tasks and the API's;
 * `:memory:` keeps nothing.
 */
import { defaultDataDir, taskDbPath } from '../node/data-dir.js'
import { MeshPeer } from '../peer/mesh-peer.js'
import { GENERATE_DEFAULTS } from '../router/options.js'
import { governanceConfigFrom, refuseDevGovernanceOffLoopback } from '../cli/governance-cli.js'
import { parseMultiaddr } from '../node/node.js'
import { HaltedError } from '../util/errors.js'
import { Agent, listTasks, type AgentConfig, type CycleReport, type TaskView } from './agent.js'
import { runAgentOnce } from './once.js'
import { AgentStore } from './store.js'
import { TaskStore } from '../tasks/store.js'
import { TASK_STATES, type TaskState } from '../tasks/model.js'
import { UsageError } from '../cli/errors.js'
import { intOption, type Values } from '../cli/args.js'
import { TASKS_LIMIT_DEFAULT } from '../cli/defaults.js'

async function usage (message: string): Promise<never> {
  throw new UsageError(message)
}

/** `--db` when not given: $MESHLLM_AGENT_DB, else `<default data dir>/tasks.sqlite` (the file `meshllm join` without --data-dir serves its API from) */
export function defaultAgentDb (env: NodeJS.ProcessEnv = process.env): string {
  return env.MESHLLM_AGENT_DB != null && env.MESHLLM_AGENT_DB !== '' ? env.MESHLLM_AGENT_DB : taskDbPath(defaultDataDir(env))
}

/** "90s", "5m", "1h", "60000" (ms) → ms */
export function parseInterval (s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim())
  if (m == null) return undefined
  const mult = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] as number
  return Math.round(Number(m[1]) * mult)
}

export function formatTasks (tasks: TaskView[]): string {
  if (tasks.length === 0) return 'no tasks\n'
  const lines: string[] = []
  for (const t of tasks) {
    lines.push(t.origin === 'api' ? `${t.id}  [${t.state}]  api: ${t.rationale !== '' ? t.rationale.split('\n')[0].slice(0, 160) : t.actions[0]?.type ?? ''}` : `${t.id}  [${t.state}]  ${t.domain}: ${t.title}`)
    for (const a of t.actions) lines.push(`    ${a.type} (${a.tier}) ${JSON.stringify(a.params).slice(0, 160)}`)
    for (const e of t.evidence) lines.push(`    · ${e}`)
  }
  return lines.join('\n') + '\n'
}

/**
 * The agent's experts threshold when --min-experts is not given: K (the agent's -k, default
 * GENERATE_DEFAULTS.k). Below it the agent reports too_few_experts and the centralised
 * fallback engages; the library default (src/agent/capacity.ts, 280) is the design figure
 * for a large public mesh, which would flag every small mesh as too small.
 */
export function defaultMinExperts (k: number | undefined): number {
  return k ?? GENERATE_DEFAULTS.k
}

/** options: src/cli/commands/agent.ts */
export async function agentCommand (values: Values): Promise<void> {
  const bootstrap: string[] = values.bootstrap ?? []
  if (bootstrap.length === 0) await usage('agent needs --bootstrap <multiaddr>')
  for (const a of bootstrap) parseMultiaddr(a)
  const once = values.once === true
  const interval = values.interval != null ? parseInterval(values.interval) : undefined
  if (once && values.interval != null) await usage('--once and --interval exclude each other')
  if (!once && values.interval == null) await usage('agent needs --once or --interval <1m…24h>')
  if (values.interval != null && (interval == null || interval < 60_000 || interval > 86_400_000)) await usage(`--interval must be 1m … 24h, got "${values.interval}"`)
  const config: AgentConfig = {}
  const k = intOption(values.k, 'k', 1)
  if (k != null) config.k = k
  config.minExperts = intOption(values['min-experts'], 'min-experts', 1) ?? defaultMinExperts(k)
  const maxTokens = intOption(values['max-tokens'], 'max-tokens', 1)
  if (maxTokens != null) config.maxTokens = maxTokens
  const json = values.json === true

  const governance = await governanceConfigFrom(values.governance, json)
  refuseDevGovernanceOffLoopback(governance, bootstrap)
  const log = (line: string): void => { process.stderr.write(`agent: ${line}\n`) }
  // a routing-only peer: the HALT hookup (routers abort) is MeshPeer's; the agent adds its own stop below
  const peer = await MeshPeer.start({ bootstrap, governance, tokenizer: values.tokenizer, catchUpMs: 5_000 })
  const { node, router, governance: gov } = peer
  const store = new AgentStore(values.db ?? defaultAgentDb())
  try {
    if (once) {
      const r = await runAgentOnce({ node, router, governance: gov, store, config, log })
      process.stdout.write(json ? JSON.stringify(r) + '\n' : formatTasks(r.tasks))
      return
    }
    const agent = new Agent({ node, router, governance: gov, store, config, log })
    const print = (r: CycleReport): void => {
      process.stdout.write(json ? JSON.stringify({ cycle: r.cycle, state: r.state, tasks: r.tasks }) + '\n' : `cycle ${r.cycle}: ${r.state}, ${r.tasks.length} task(s)\n${formatTasks(r.tasks)}`)
    }
    const halted = await new Promise<string | undefined>((resolve) => {
      peer.on('halt', (reason) => resolve(reason))
      process.once('SIGINT', () => resolve(undefined))
      process.once('SIGTERM', () => resolve(undefined))
      agent.start(interval as number, { onCycle: print })
    })
    await agent.close()
    if (halted != null) throw new HaltedError(`halted by governance: ${halted}`)
  } finally {
    store.close()
    await peer.stop()
  }
}

/** options: src/cli/commands/tasks.ts */
export async function tasksCommand (values: Values): Promise<void> {
  if (values.state != null && !TASK_STATES.includes(values.state)) await usage(`--state must be one of ${TASK_STATES.join(', ')}, got "${values.state}"`)
  const limit = intOption(values.limit, 'limit', 1)
  const store = new TaskStore(values.db ?? defaultAgentDb())
  try {
    const tasks = listTasks(store, { state: values.state as TaskState | undefined, limit: limit ?? TASKS_LIMIT_DEFAULT })
    process.stdout.write(values.json === true ? JSON.stringify({ tasks }) + '\n' : formatTasks(tasks))
  } finally {
    store.close()
  }
}
