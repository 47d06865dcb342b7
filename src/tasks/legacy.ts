/**
 * The two task tables meshllm had before the one table (src/tasks/store.ts), and how a file
 * of either kind is brought over when the store opens it:
 *
 * - the API's queue (`<data-dir>/tasks.sqlite` of `join`): the same columns less the agent's:
 *   they are added (`origin` 'api'), nothing is rewritten;
 * - the agent's own table (`meshllm agent --db`, formerly `~/.meshllm/agent.db`): renamed to
 *   `tasks_agent_v0`, every row converted (its stored state decides status and approval: a
 *   human rejection stays a rejection) into the new table in the same order, then dropped.
 *   Its `approvals`, `cycles` and `samples` tables have not changed.
 */
import type { DatabaseSync } from 'node:sqlite'
import { Tier } from '../governance/tiers.js'
import { ACTION_STATES, agentTaskFacts, storedOf, type ActionState, type AgentTask, type AgentTaskFacts, type TaskAction } from './model.js'

/** A tasks table of a layout no version of meshllm wrote. */
export class TaskDatabaseError extends Error {
  static override name = 'TaskDatabaseError'
  override name = 'TaskDatabaseError'
}

/** the columns the one table has beyond the API's former queue (their defaults are an API task's) */
export const ADDED_COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ['origin', "TEXT NOT NULL DEFAULT 'api'"],
  ['title', "TEXT NOT NULL DEFAULT ''"],
  ['domain', "TEXT NOT NULL DEFAULT ''"],
  ['evidence', "TEXT NOT NULL DEFAULT '[]'"],
  ['actions', "TEXT NOT NULL DEFAULT '[]'"],
  ['cycle', 'INTEGER'],
  ['finding_key', 'TEXT'],
  ['meta', 'TEXT']
]

export const LEGACY_AGENT_TABLE = 'tasks_agent_v0'

/** a row of the agent's former table, ready for the new one */
export interface LegacyAgentTask {
  id: string
  created: number
  updated: number
  task: AgentTask
  facts: AgentTaskFacts
}

/** a row of the agent's former table (LEGACY_AGENT_TABLE): JSON columns as text */
interface LegacyRow {
  id: string
  created: number
  updated: number
  cycle: number
  domain: string
  title: string
  rationale: string
  evidence: string
  actions: string
  state: string
  output: string | null
  source: string
  finding_key: string | null
  meta: string | null
}

/**
 * Brings a former layout over, inside the caller's transaction, before the current schema is
 * created: returns the agent rows to insert (then the caller drops LEGACY_AGENT_TABLE).
 */
export function migrateLegacyLayout (db: DatabaseSync): LegacyAgentTask[] {
  const cols = (db.prepare('PRAGMA table_info(tasks)').all() as Array<{ name: string }>).map(c => c.name)
  if (cols.length === 0 || cols.includes('origin')) return []
  if (cols.includes('status') && cols.includes('approval')) {
    db.exec('DROP INDEX IF EXISTS tasks_queue') // next()'s index: nothing takes tasks from the queue
    for (const [name, ddl] of ADDED_COLUMNS) db.exec(`ALTER TABLE tasks ADD COLUMN ${name} ${ddl}`)
    return []
  }
  if (!(cols.includes('state') && cols.includes('actions'))) {
    throw new TaskDatabaseError(`the tasks table has an unknown layout (columns ${cols.join(', ').slice(0, 300)})`)
  }
  db.exec(`DROP INDEX IF EXISTS tasks_state; DROP INDEX IF EXISTS tasks_finding; ALTER TABLE tasks RENAME TO ${LEGACY_AGENT_TABLE}`)
  const rows = db.prepare(`SELECT * FROM ${LEGACY_AGENT_TABLE} ORDER BY seq`).all() as unknown as LegacyRow[]
  return rows.map((r): LegacyAgentTask => {
    const actions = JSON.parse(r.actions) as TaskAction[]
    const state = (ACTION_STATES.includes(r.state as ActionState) ? r.state : 'queued') as ActionState
    const task: AgentTask = {
      cycle: Number(r.cycle),
      domain: r.domain,
      title: r.title,
      rationale: r.rationale,
      evidence: JSON.parse(r.evidence) as string[],
      actions,
      ...(r.output != null ? { output: r.output } : {}),
      source: r.source,
      ...(r.finding_key != null ? { findingKey: r.finding_key } : {}),
      ...(r.meta != null ? { meta: JSON.parse(r.meta) as Record<string, unknown> } : {})
    }
    return { id: r.id, created: Number(r.created), updated: Number(r.updated), task, facts: legacyFacts(actions, state) }
  })
}

/** the facts of a former row: its actions' where they agree with the stored state, the stored state's status and approval always */
function legacyFacts (actions: TaskAction[], state: ActionState): AgentTaskFacts {
  let facts: AgentTaskFacts
  try {
    facts = agentTaskFacts(actions)
  } catch {
    // a row no gate of the agent wrote (hand-made): the highest tier it names, nothing refused
    const tiers = actions.map(a => (Tier as unknown as Record<string, unknown>)[a.tier]).map(t => typeof t === 'number' ? t : Tier.DEPLOY_MAJOR)
    const tier = Math.max(Tier.READ_ONLY, ...tiers) as Tier
    const lead = actions[0]
    facts = {
      state,
      status: 'queued',
      approval: 'auto',
      approvalReason: lead?.reason ?? '',
      needs: [],
      tier,
      tierName: Tier[tier],
      knownAction: actions.every(a => a.known),
      type: lead?.type ?? '',
      params: lead?.params ?? {}
    }
  }
  return { ...facts, state, ...storedOf(state) }
}
