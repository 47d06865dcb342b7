/**
 * `meshllm agent` and `meshllm tasks` (wired in src/cli/main.ts):
 *
 *   meshllm agent --once --bootstrap <multiaddr>… [--json] [--db <file>] [--governance <file>] [-k <n>] [--min-experts <n>] [--tokenizer <spec>]
 *   meshllm agent --interval <1m…24h> --bootstrap <multiaddr>… [same options]     (runs until SIGINT/SIGTERM or a HALT)
 *   meshllm tasks [--db <file>] [--state <state>] [--limit <n>] [--json]
 *
 * The database defaults to $MESHLLM_AGENT_DB or ~/.meshllm/agent.db; `:memory:` keeps nothing.
 */
import { homedir } from 'node:os'
import { join } from 'node:path'
import { Router, verifyHaltWith } from '../router/router.js'
import { RouterTokenizer } from '../router/tokenizer.js'
import { governanceClient, governanceConfigFrom } from '../cli/governance-cli.js'
import { parseMultiaddr } from '../node/node.js'
import { HaltedError } from '../util/errors.js'
import { Agent, listTasks, runAgentOnce, type AgentConfig, type CycleReport, type TaskView } from './agent.js'
import { AgentStore, TASK_STATES, type TaskState } from './store.js'
import { UsageError } from '../cli/errors.js'

type Parse = (args: string[], options: any) => { values: Record<string, any>, positionals: string[] }

async function usage (message: string): Promise<never> {
  throw new UsageError(message)
}

export function defaultAgentDb (): string {
  return process.env.MESHLLM_AGENT_DB ?? join(homedir(), '.meshllm', 'agent.db')
}

/** "90s", "5m", "1h", "60000" (ms) → ms */
export function parseInterval (s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim())
  if (m == null) return undefined
  const mult = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] as number
  return Math.round(Number(m[1]) * mult)
}

function positiveInt (v: string | undefined): number | undefined {
  if (v == null) return undefined
  const n = Number(v)
  return Number.isInteger(n) && n >= 1 ? n : NaN
}

export function formatTasks (tasks: TaskView[]): string {
  if (tasks.length === 0) return 'no tasks\n'
  const lines: string[] = []
  for (const t of tasks) {
    lines.push(`${t.id}  [${t.state}]  ${t.domain}: ${t.title}`)
    for (const a of t.actions) lines.push(`    ${a.type} (${a.tier}) ${JSON.stringify(a.params).slice(0, 160)}`)
    for (const e of t.evidence) lines.push(`    · ${e}`)
  }
  return lines.join('\n') + '\n'
}

export async function agentCommand (args: string[], parse: Parse): Promise<void> {
  const { values } = parse(args, {
    once: { type: 'boolean' },
    interval: { type: 'string' },
    bootstrap: { type: 'string', multiple: true },
    json: { type: 'boolean' },
    db: { type: 'string' },
    governance: { type: 'string' },
    tokenizer: { type: 'string' },
    k: { type: 'string', short: 'k' },
    'min-experts': { type: 'string' },
    'max-tokens': { type: 'string' }
  })
  const bootstrap: string[] = values.bootstrap ?? []
  if (bootstrap.length === 0) await usage('agent needs --bootstrap <multiaddr>')
  for (const a of bootstrap) parseMultiaddr(a)
  const once = values.once === true
  const interval = values.interval != null ? parseInterval(values.interval) : undefined
  if (!once && values.interval == null) await usage('agent needs --once or --interval <1m…24h>')
  if (values.interval != null && (interval == null || interval < 60_000 || interval > 86_400_000)) await usage(`--interval must be 1m … 24h, got "${values.interval}"`)
  const config: AgentConfig = {}
  const k = positiveInt(values.k)
  if (Number.isNaN(k)) await usage(`-k must be an integer ≥ 1, got "${values.k}"`)
  if (k != null) config.k = k
  const minExperts = positiveInt(values['min-experts'])
  if (Number.isNaN(minExperts)) await usage(`--min-experts must be an integer ≥ 1, got "${values['min-experts']}"`)
  if (minExperts != null) config.minExperts = minExperts
  const maxTokens = positiveInt(values['max-tokens'])
  if (Number.isNaN(maxTokens)) await usage(`--max-tokens must be an integer ≥ 1, got "${values['max-tokens']}"`)
  if (maxTokens != null) config.maxTokens = maxTokens
  const json = values.json === true

  const { node, gov, close } = await governanceClient(await governanceConfigFrom(values.governance, json), bootstrap)
  const tokenizer = await RouterTokenizer.load(values.tokenizer ?? 'meshtest-c')
  const store = new AgentStore(values.db ?? defaultAgentDb())
  const log = (line: string): void => { process.stderr.write(`agent: ${line}\n`) }
  try {
    const router = new Router(node, tokenizer, { haltReason: () => gov.haltReason, verifyHalt: verifyHaltWith(gov) })
    gov.on({ onHalt: (reason) => router.abortAll(reason) })
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
      gov.on({ onHalt: (reason) => resolve(reason) })
      process.once('SIGINT', () => resolve(undefined))
      process.once('SIGTERM', () => resolve(undefined))
      agent.start(interval as number, { onCycle: print })
    })
    await agent.close()
    if (halted != null) throw new HaltedError(`halted by governance: ${halted}`)
  } finally {
    store.close()
    await tokenizer.close()
    await close()
  }
}

export async function tasksCommand (args: string[], parse: Parse): Promise<void> {
  const { values } = parse(args, {
    db: { type: 'string' },
    state: { type: 'string' },
    limit: { type: 'string' },
    json: { type: 'boolean' }
  })
  if (values.state != null && !TASK_STATES.includes(values.state)) await usage(`--state must be one of ${TASK_STATES.join(', ')}, got "${values.state}"`)
  const limit = positiveInt(values.limit)
  if (Number.isNaN(limit)) await usage(`--limit must be an integer ≥ 1, got "${values.limit}"`)
  const store = new AgentStore(values.db ?? defaultAgentDb())
  try {
    const tasks = listTasks(store, { state: values.state as TaskState | undefined, limit: limit ?? 50 })
    process.stdout.write(values.json === true ? JSON.stringify({ tasks }) + '\n' : formatTasks(tasks))
  } finally {
    store.close()
  }
}
