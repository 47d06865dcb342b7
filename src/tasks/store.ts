/**
 * The node's one task table, in an embedded SQLite database (Node 22's built-in
 * `node:sqlite`): the tasks submitted through the API (gRPC SubmitSelfTask) and the tasks the
 * self-prompting agent records (its proposals, detector reports and audits) side by side,
 * with the human decisions on them (`approvals`). The API lists it (ListTasks), `meshllm
 * tasks` lists it, and the agent's cycles and samples (src/agent/store.ts) live in the same
 * database, on the same connection (`db`). Under `meshllm join` the file is
 * `<data-dir>/tasks.sqlite` (`taskDbPath`, src/node/data-dir.ts), the default of `meshllm
 * agent` and `meshllm tasks` too; ':memory:' keeps nothing.
 *
 * Nothing runs a queued task: the API records and lists, the agent runs its own read-only
 * actions before it records them. A task changes once at most: a human rejection
 * (`addApproval`) cancels it. Retention: the newest `maxTasks` tasks (default 10,000),
 * whoever recorded them; their approvals go with them.
 *
 * The vocabulary (status, approval, the agent's derived state) is in src/tasks/model.ts.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { createRequire } from 'node:module'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Tier } from '../governance/tiers.js'
import {
  InvalidTaskError, TASK_STATUSES, TaskNotFoundError, agentTaskFacts, stateCondition, stateOf,
  type ActionState, type AgentTask, type AgentTaskFacts, type Approval, type NewTask, type TaskAction, type TaskAssessment, type TaskOrigin,
  type TaskRecord, type TaskState, type TaskStatus
} from './model.js'
import { ADDED_COLUMNS, LEGACY_AGENT_TABLE, migrateLegacyLayout } from './legacy.js'

export { TaskDatabaseError } from './legacy.js'

export interface TaskStoreOptions {
  /** at most this many tasks, the newest (default 10,000; their approvals go with them) */
  maxTasks?: number
}

/** a human decision on a task */
export interface ApprovalRecord {
  taskId: string
  at: number
  by: string
  decision: 'approve' | 'reject'
  note: string
}

export interface ListTasksOptions {
  status?: TaskStatus
  /** the agent's view (stateOf), e.g. awaiting_review */
  state?: TaskState
  origin?: TaskOrigin
  /** default 50, at most 1000 */
  limit?: number
  offset?: number
}

/** the bounds of an approval */
export const APPROVAL_LIMITS = Object.freeze({ byChars: 256, noteChars: 4096 })

interface Row {
  seq: number
  id: string
  origin: string
  type: string
  params: string
  description: string
  status: string
  tier: number
  known_action: number
  approval: string
  approval_reason: string
  needs: string
  priority: number
  source: string
  created_at: number
  updated_at: number
  result: string | null
  title: string
  domain: string
  evidence: string
  actions: string
  cycle: number | null
  finding_key: string | null
  meta: string | null
}

/** a row of `approvals` */
interface ApprovalRow {
  task_id: string
  at: number
  by: string
  decision: ApprovalRecord['decision']
  note: string
}

type NewRow = Omit<Row, 'seq'>
const COLUMNS: ReadonlyArray<keyof NewRow> = [
  'id', 'origin', 'type', 'params', 'description', 'status', 'tier', 'known_action', 'approval', 'approval_reason', 'needs',
  'priority', 'source', 'created_at', 'updated_at', 'result', 'title', 'domain', 'evidence', 'actions', 'cycle', 'finding_key', 'meta'
]

/** the prepared statements */
type Statement = 'insert' | 'get' | 'ofCycle' | 'count' | 'openByFinding' | 'setStatus' | 'approvalInsert' | 'approvalsOf' | 'pruneApprovals' | 'pruneTasks'

export class TaskStore {
  readonly path: string
  /** the connection: the agent's cycles and samples (src/agent/store.ts) share it, one database */
  readonly db: DatabaseSync
  readonly maxTasks: number
  private s: Record<Statement, StatementSync>
  private txDepth = 0

  constructor (path = ':memory:', opts: TaskStoreOptions = {}) {
    this.path = path
    this.maxTasks = opts.maxTasks ?? 10_000
    if (!Number.isSafeInteger(this.maxTasks) || this.maxTasks < 1) throw new RangeError(`maxTasks must be a positive integer, got ${String(opts.maxTasks)}`)
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    // loaded on first use: node:sqlite prints an ExperimentalWarning when loaded, and a CLI
    // that merely imports the API (without serving it) should not
    const { DatabaseSync: Database } = createRequire(import.meta.url)('node:sqlite') as typeof import('node:sqlite')
    this.db = new Database(path)
    if (path !== ':memory:') {
      // `join` (its API) and a `meshllm agent` may write one file: wait for the other's lock
      this.db.exec('PRAGMA busy_timeout = 5000')
      this.db.exec('PRAGMA journal_mode = WAL')
    }
    this.db.exec('BEGIN IMMEDIATE')
    try {
      const legacy = migrateLegacyLayout(this.db)
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS tasks (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          id TEXT NOT NULL UNIQUE,
          type TEXT NOT NULL,
          params TEXT NOT NULL,
          description TEXT NOT NULL,
          status TEXT NOT NULL,
          tier INTEGER NOT NULL,
          known_action INTEGER NOT NULL,
          approval TEXT NOT NULL,
          approval_reason TEXT NOT NULL,
          needs TEXT NOT NULL,
          priority INTEGER NOT NULL,
          source TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          result TEXT,
          ${ADDED_COLUMNS.map(([name, ddl]) => `${name} ${ddl}`).join(',\n          ')}
        );
        CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, seq);
        CREATE INDEX IF NOT EXISTS tasks_finding ON tasks (finding_key, created_at);
        CREATE INDEX IF NOT EXISTS tasks_cycle ON tasks (cycle, seq);
        CREATE TABLE IF NOT EXISTS approvals (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          task_id TEXT NOT NULL,
          at INTEGER NOT NULL,
          by TEXT NOT NULL,
          decision TEXT NOT NULL,
          note TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS approvals_task ON approvals (task_id);
      `)
      this.s = this.prepare()
      this.txDepth++
      for (const r of legacy) this.insert(agentRow(r.task, r.id, r.created, r.updated, r.facts))
      this.db.exec(`DROP TABLE IF EXISTS ${LEGACY_AGENT_TABLE}`)
      this.db.exec('COMMIT')
    } catch (err) {
      this.db.exec('ROLLBACK')
      this.db.close()
      throw err
    } finally {
      this.txDepth = 0
    }
  }

  private prepare (): TaskStore['s'] {
    const p = (sql: string): StatementSync => this.db.prepare(sql)
    return {
      insert: p(`INSERT INTO tasks (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map(() => '?').join(', ')})`),
      get: p('SELECT * FROM tasks WHERE id = ?'),
      ofCycle: p("SELECT * FROM tasks WHERE cycle = ? AND origin = 'agent' ORDER BY seq"),
      count: p('SELECT COUNT(*) AS n FROM tasks'),
      openByFinding: p("SELECT * FROM tasks WHERE finding_key = ? AND created_at >= ? AND status = 'queued' ORDER BY seq DESC LIMIT 1"),
      setStatus: p('UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?'),
      approvalInsert: p('INSERT INTO approvals (task_id, at, by, decision, note) VALUES (?, ?, ?, ?, ?)'),
      approvalsOf: p('SELECT * FROM approvals WHERE task_id = ? ORDER BY id'),
      pruneApprovals: p('DELETE FROM approvals WHERE task_id IN (SELECT id FROM tasks WHERE seq <= ?)'),
      pruneTasks: p('DELETE FROM tasks WHERE seq <= ?')
    }
  }

  /** Records a task submitted through the API with its assessment (tier, approval); status 'queued'. */
  add (task: NewTask, assessment: TaskAssessment, now = Date.now()): TaskRecord {
    return this.insert({
      ...blankAgentColumns(),
      id: newId(now),
      origin: 'api',
      type: task.type,
      params: JSON.stringify(task.params ?? {}),
      description: task.description ?? '',
      status: 'queued',
      tier: assessment.tier,
      known_action: assessment.knownAction ? 1 : 0,
      approval: checkApproval(assessment.approval),
      approval_reason: assessment.approvalReason,
      needs: JSON.stringify(assessment.needs),
      priority: Math.trunc(task.priority ?? 0),
      source: task.source ?? '',
      created_at: now,
      updated_at: now,
      result: null
    })
  }

  /**
   * Records a task of the agent: its actions gated (agentTaskFacts gives its status, approval
   * and tier; InvalidTaskError for an action state its tier cannot have).
   */
  addAgentTask (t: AgentTask, now = Date.now()): TaskRecord {
    return this.insert(agentRow(t, newId(now), now, now))
  }

  get (id: string): TaskRecord | undefined {
    const row = this.s.get.get(id) as Row | undefined
    return row != null ? fromRow(row) : undefined
  }

  /** newest first; `total`: the matching tasks in all */
  list (opts: ListTasksOptions = {}): { tasks: TaskRecord[], total: number } {
    const where: string[] = []
    const args: Array<string | number> = []
    if (opts.status != null) {
      if (!TASK_STATUSES.includes(opts.status)) throw new InvalidTaskError(`unknown task status "${String(opts.status).slice(0, 64)}"`)
      where.push('status = ?')
      args.push(opts.status)
    }
    if (opts.state != null) {
      const c = stateCondition(opts.state)
      where.push(c.sql)
      args.push(...c.args)
    }
    if (opts.origin != null) { where.push('origin = ?'); args.push(opts.origin) }
    const w = where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''
    const limit = Math.max(1, Math.min(1000, Math.floor(opts.limit ?? 50)))
    const offset = Math.max(0, Math.floor(opts.offset ?? 0))
    const total = (this.db.prepare(`SELECT COUNT(*) AS n FROM tasks ${w}`).get(...args) as { n: number }).n
    const rows = this.db.prepare(`SELECT * FROM tasks ${w} ORDER BY seq DESC LIMIT ? OFFSET ?`).all(...args, limit, offset) as unknown as Row[]
    return { tasks: rows.map(fromRow), total: Number(total) }
  }

  /** the agent's tasks of one cycle, oldest first */
  ofCycle (cycle: number): TaskRecord[] {
    return (this.s.ofCycle.all(cycle) as unknown as Row[]).map(fromRow)
  }

  count (): number {
    return Number((this.s.count.get() as { n: number }).n)
  }

  /** an open task (status queued: queued, awaiting review or quorum, blocked) for this finding created since `sinceMs` */
  openTaskFor (findingKey: string, sinceMs: number): TaskRecord | undefined {
    const r = this.s.openByFinding.get(findingKey, sinceMs) as Row | undefined
    return r != null ? fromRow(r) : undefined
  }

  /**
   * A human decision on a task, whoever recorded it. A rejection cancels the task (the
   * agent's view: rejected); an approval is recorded only: nothing executes because of it.
   * TaskNotFoundError for an unknown id, InvalidTaskError for a bad decision or an
   * unbounded `by` / `note`.
   */
  addApproval (taskId: string, a: { by: string, decision: 'approve' | 'reject', note?: string }, now = Date.now()): ApprovalRecord {
    if (a.decision !== 'approve' && a.decision !== 'reject') throw new InvalidTaskError('decision must be approve or reject')
    if (typeof a.by !== 'string' || a.by.length === 0 || a.by.length > APPROVAL_LIMITS.byChars) {
      throw new InvalidTaskError(`by must have 1–${APPROVAL_LIMITS.byChars} characters`)
    }
    const note = a.note ?? ''
    if (typeof note !== 'string' || note.length > APPROVAL_LIMITS.noteChars) {
      throw new InvalidTaskError(`note must have at most ${APPROVAL_LIMITS.noteChars} characters`)
    }
    if (this.get(taskId) == null) throw new TaskNotFoundError(`no task "${String(taskId).slice(0, 128)}"`)
    this.tx(() => {
      this.s.approvalInsert.run(taskId, now, a.by, a.decision, note)
      if (a.decision === 'reject') this.s.setStatus.run('cancelled', now, taskId)
    })
    return { taskId, at: now, by: a.by, decision: a.decision, note }
  }

  approvals (taskId: string): ApprovalRecord[] {
    const rows = this.s.approvalsOf.all(taskId) as unknown as ApprovalRow[]
    return rows.map(r => ({ taskId: r.task_id, at: Number(r.at), by: r.by, decision: r.decision, note: r.note }))
  }

  close (): void {
    if (this.db.isOpen) this.db.close()
  }

  /** runs `fn` in one transaction (nested calls join the outer one) */
  tx<T> (fn: () => T): T {
    if (this.txDepth > 0) return fn()
    this.db.exec('BEGIN IMMEDIATE')
    this.txDepth++
    try {
      const r = fn()
      this.db.exec('COMMIT')
      return r
    } catch (err) {
      this.db.exec('ROLLBACK')
      throw err
    } finally {
      this.txDepth--
    }
  }

  /** inserts, then keeps the newest maxTasks tasks (and their approvals) */
  private insert (row: NewRow): TaskRecord {
    this.tx(() => {
      const seq = Number(this.s.insert.run(...COLUMNS.map(c => row[c])).lastInsertRowid)
      if (seq > this.maxTasks) {
        this.s.pruneApprovals.run(seq - this.maxTasks)
        this.s.pruneTasks.run(seq - this.maxTasks)
      }
    })
    return this.get(row.id) as TaskRecord
  }
}

function newId (now: number): string {
  return `task_${now.toString(36)}${randomBytes(5).toString('hex')}`
}

function checkApproval (a: Approval): Approval {
  if (a !== 'auto' && a !== 'pending' && a !== 'blocked') throw new InvalidTaskError(`unknown approval "${String(a).slice(0, 64)}"`)
  return a
}

function blankAgentColumns (): Pick<NewRow, 'title' | 'domain' | 'evidence' | 'actions' | 'cycle' | 'finding_key' | 'meta'> {
  return { title: '', domain: '', evidence: '[]', actions: '[]', cycle: null, finding_key: null, meta: null }
}

/** the row of an agent task (also what a former agent-layout row becomes: src/tasks/legacy.ts) */
function agentRow (t: AgentTask, id: string, created: number, updated: number, facts: AgentTaskFacts = agentTaskFacts(t.actions)): NewRow {
  return {
    id,
    origin: 'agent',
    type: facts.type,
    params: JSON.stringify(facts.params),
    description: t.rationale,
    status: facts.status,
    tier: facts.tier,
    known_action: facts.knownAction ? 1 : 0,
    approval: facts.approval,
    approval_reason: facts.approvalReason,
    needs: JSON.stringify(facts.needs),
    priority: Math.trunc(t.priority ?? 0),
    source: t.source,
    created_at: created,
    updated_at: updated,
    result: t.output != null ? JSON.stringify(t.output) : null,
    title: t.title,
    domain: t.domain,
    evidence: JSON.stringify(t.evidence),
    actions: JSON.stringify(t.actions satisfies TaskAction[]),
    cycle: t.cycle,
    finding_key: t.findingKey ?? null,
    meta: t.meta != null ? JSON.stringify(t.meta) : null
  }
}

function fromRow (r: Row): TaskRecord {
  const status = r.status as TaskStatus
  const approval = r.approval as Approval
  const tier = Number(r.tier) as Tier
  return {
    id: r.id,
    origin: r.origin as TaskOrigin,
    type: r.type,
    params: JSON.parse(r.params),
    description: r.description,
    status,
    state: stateOf(status, approval, tier),
    tier,
    tierName: Tier[tier],
    knownAction: Number(r.known_action) === 1,
    approval,
    approvalReason: r.approval_reason,
    needs: JSON.parse(r.needs),
    priority: Number(r.priority),
    source: r.source,
    createdAtMs: Number(r.created_at),
    updatedAtMs: Number(r.updated_at),
    ...(r.result != null ? { result: JSON.parse(r.result) } : {}),
    title: r.title,
    domain: r.domain,
    evidence: JSON.parse(r.evidence),
    // an API task's one action, from its columns (its gate state: stateOf, queued)
    actions: r.origin === 'api'
      ? [{
          type: r.type,
          params: JSON.parse(r.params),
          tier: Tier[tier],
          known: Number(r.known_action) === 1,
          state: stateOf('queued', approval, tier) as ActionState,
          reason: r.approval_reason,
          needs: JSON.parse(r.needs)
        }]
      : JSON.parse(r.actions),
    ...(r.cycle != null ? { cycle: Number(r.cycle) } : {}),
    ...(r.finding_key != null ? { findingKey: r.finding_key } : {}),
    ...(r.meta != null ? { meta: JSON.parse(r.meta) } : {})
  }
}
