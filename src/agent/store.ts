/**
 * The agent's store: metric samples, cycles, tasks and approvals in an embedded SQLite
 * database through Node 22's built-in `node:sqlite` (`DatabaseSync`): a real SQL database
 * (indexes, transactions, WAL on files) with no native module to build. A file path
 * persists across runs; ':memory:' does not. Every statement is prepared once. Retention is
 * bounded: samples by age and count, cycles and tasks by count (see AgentStoreOptions).
 *
 * Why not better-sqlite3: it is a native addon compiled for the Node that runs `npm ci`
 * (Node 20 here), and meshllm runs under the Node 22 that `npm ci` installs: the addon
 * would fail to load (NODE_MODULE_VERSION mismatch). docs/agent.md has the details.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'

export type TaskState = 'queued' | 'executed' | 'awaiting_review' | 'awaiting_quorum' | 'blocked' | 'rejected'
export const TASK_STATES: readonly TaskState[] = ['queued', 'executed', 'awaiting_review', 'awaiting_quorum', 'blocked', 'rejected']

export type CycleState = 'running' | 'done' | 'halted' | 'failed'

export interface Sample {
  name: string
  labels?: Record<string, string>
  value: number
}

export interface StoredSample extends Sample {
  cycle: number
  at: number
  labels: Record<string, string>
}

/** one action of a task, as gated */
export interface TaskAction {
  type: string
  params: Record<string, unknown>
  /** Tier name (READ_ONLY, SUGGEST, SANDBOX_TEST, DEPLOY_MINOR, DEPLOY_MAJOR) */
  tier: string
  /** the catalogue knew the type and the params passed its schema */
  known: boolean
  /** what the gate decided for this action */
  state: TaskState
  reason: string
  needs: string[]
}

export interface NewTask {
  cycle: number
  domain: string
  title: string
  rationale: string
  evidence: string[]
  actions: TaskAction[]
  state: TaskState
  output?: string
  /** 'mesh' (proposed by a generation), 'audit', or 'detector' (deterministic, when no generation was possible) */
  source: string
  /** the finding this task answers (kind:subject), to avoid repeating open tasks */
  findingKey?: string
  /** generation facts (experts, tokens, forced steps, raw text…) */
  meta?: Record<string, unknown>
}

export interface StoredTask extends NewTask {
  id: string
  created: number
  updated: number
}

export interface Approval {
  taskId: string
  at: number
  by: string
  decision: 'approve' | 'reject'
  note: string
}

export interface CycleRecord {
  id: number
  started: number
  ended?: number
  state: CycleState
  mode?: string
  /** summary: experts online, governance counters, streams, capacity… */
  summary: Record<string, any>
}

export interface AgentStoreOptions {
  /** samples older than this are dropped (ms, default 7 days) */
  maxSampleAgeMs?: number
  /** at most this many samples (default 200 000) */
  maxSamples?: number
  /** at most this many cycles (default 10 000) */
  maxCycles?: number
  /** at most this many tasks (default 10 000; their approvals go with them) */
  maxTasks?: number
}

interface TaskRow {
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

export class AgentStore {
  readonly path: string
  private readonly db: DatabaseSync
  private readonly s: Record<string, StatementSync>
  private readonly opts: Required<AgentStoreOptions>

  constructor (path = ':memory:', opts: AgentStoreOptions = {}) {
    this.path = path
    this.opts = { maxSampleAgeMs: 7 * 24 * 3_600_000, maxSamples: 200_000, maxCycles: 10_000, maxTasks: 10_000, ...opts }
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    this.db = new DatabaseSync(path)
    if (path !== ':memory:') this.db.exec('PRAGMA journal_mode = WAL')
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS cycles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started INTEGER NOT NULL,
        ended INTEGER,
        state TEXT NOT NULL,
        mode TEXT,
        summary TEXT NOT NULL DEFAULT '{}'
      );
      CREATE TABLE IF NOT EXISTS samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cycle INTEGER NOT NULL,
        at INTEGER NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL NOT NULL
      );
      CREATE INDEX IF NOT EXISTS samples_name ON samples (name, at);
      CREATE INDEX IF NOT EXISTS samples_cycle ON samples (cycle);
      CREATE TABLE IF NOT EXISTS tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        cycle INTEGER NOT NULL,
        domain TEXT NOT NULL,
        title TEXT NOT NULL,
        rationale TEXT NOT NULL,
        evidence TEXT NOT NULL,
        actions TEXT NOT NULL,
        state TEXT NOT NULL,
        output TEXT,
        source TEXT NOT NULL,
        finding_key TEXT,
        meta TEXT
      );
      CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, seq);
      CREATE INDEX IF NOT EXISTS tasks_finding ON tasks (finding_key, created);
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
    const p = (sql: string): StatementSync => this.db.prepare(sql)
    this.s = {
      cycleStart: p("INSERT INTO cycles (started, state, summary) VALUES (?, 'running', '{}')"),
      cycleEnd: p('UPDATE cycles SET ended = ?, state = ?, mode = ?, summary = ? WHERE id = ?'),
      cycleGet: p('SELECT * FROM cycles WHERE id = ?'),
      cyclePrev: p("SELECT * FROM cycles WHERE id < ? AND state != 'running' ORDER BY id DESC LIMIT 1"),
      cycleList: p('SELECT * FROM cycles ORDER BY id DESC LIMIT ?'),
      sampleInsert: p('INSERT INTO samples (cycle, at, name, labels, value) VALUES (?, ?, ?, ?, ?)'),
      samplesOfCycle: p('SELECT * FROM samples WHERE cycle = ? ORDER BY id'),
      samplesByName: p('SELECT * FROM samples WHERE name = ? AND at >= ? ORDER BY id DESC LIMIT ?'),
      taskInsert: p(`INSERT INTO tasks (id, created, updated, cycle, domain, title, rationale, evidence, actions, state, output, source, finding_key, meta)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      taskGet: p('SELECT * FROM tasks WHERE id = ?'),
      taskSetState: p('UPDATE tasks SET state = ?, updated = ? WHERE id = ?'),
      taskSetOutput: p('UPDATE tasks SET output = ?, updated = ? WHERE id = ?'),
      taskList: p('SELECT * FROM tasks ORDER BY seq DESC LIMIT ? OFFSET ?'),
      taskListState: p('SELECT * FROM tasks WHERE state = ? ORDER BY seq DESC LIMIT ? OFFSET ?'),
      taskListCycle: p('SELECT * FROM tasks WHERE cycle = ? ORDER BY seq'),
      taskCount: p('SELECT COUNT(*) AS n FROM tasks'),
      taskOpenByFinding: p("SELECT * FROM tasks WHERE finding_key = ? AND created >= ? AND state IN ('queued', 'awaiting_review', 'awaiting_quorum', 'blocked') ORDER BY seq DESC LIMIT 1"),
      approvalInsert: p('INSERT INTO approvals (task_id, at, by, decision, note) VALUES (?, ?, ?, ?, ?)'),
      approvalsOf: p('SELECT * FROM approvals WHERE task_id = ? ORDER BY id'),
      pruneSamplesAge: p('DELETE FROM samples WHERE at < ?'),
      pruneSamplesCount: p('DELETE FROM samples WHERE id <= (SELECT id FROM samples ORDER BY id DESC LIMIT 1 OFFSET ?)'),
      pruneCycles: p('DELETE FROM cycles WHERE id <= (SELECT id FROM cycles ORDER BY id DESC LIMIT 1 OFFSET ?)'),
      pruneApprovals: p('DELETE FROM approvals WHERE task_id IN (SELECT id FROM tasks WHERE seq <= (SELECT seq FROM tasks ORDER BY seq DESC LIMIT 1 OFFSET ?))'),
      pruneTasks: p('DELETE FROM tasks WHERE seq <= (SELECT seq FROM tasks ORDER BY seq DESC LIMIT 1 OFFSET ?)')
    }
  }

  // ---------------------------------------------------------------- cycles

  startCycle (now = Date.now()): number {
    return Number(this.s.cycleStart.run(now).lastInsertRowid)
  }

  endCycle (id: number, state: CycleState, mode: string | undefined, summary: Record<string, unknown>, now = Date.now()): void {
    this.s.cycleEnd.run(now, state, mode ?? null, JSON.stringify(summary), id)
  }

  cycle (id: number): CycleRecord | undefined {
    const r = this.s.cycleGet.get(id) as any
    return r != null ? cycleFromRow(r) : undefined
  }

  /** the last finished cycle before `id` (churn, counter deltas) */
  previousCycle (id: number): CycleRecord | undefined {
    const r = this.s.cyclePrev.get(id) as any
    return r != null ? cycleFromRow(r) : undefined
  }

  cycles (limit = 20): CycleRecord[] {
    return (this.s.cycleList.all(clampLimit(limit)) as any[]).map(cycleFromRow)
  }

  // ---------------------------------------------------------------- samples

  /** stores a cycle's samples in one transaction */
  addSamples (cycle: number, samples: Sample[], now = Date.now()): void {
    this.tx(() => {
      for (const x of samples) {
        if (!Number.isFinite(x.value)) continue
        this.s.sampleInsert.run(cycle, now, x.name, JSON.stringify(x.labels ?? {}), x.value)
      }
    })
  }

  samples (cycle: number): StoredSample[] {
    return (this.s.samplesOfCycle.all(cycle) as any[]).map(sampleFromRow)
  }

  /** newest first */
  series (name: string, opts: { sinceMs?: number, limit?: number } = {}): StoredSample[] {
    return (this.s.samplesByName.all(name, opts.sinceMs ?? 0, clampLimit(opts.limit ?? 500, 100_000)) as any[]).map(sampleFromRow)
  }

  // ---------------------------------------------------------------- tasks

  addTask (t: NewTask, now = Date.now()): StoredTask {
    const id = `task_${now.toString(36)}${randomBytes(5).toString('hex')}`
    this.s.taskInsert.run(id, now, now, t.cycle, t.domain, t.title, t.rationale, JSON.stringify(t.evidence), JSON.stringify(t.actions), t.state,
      t.output ?? null, t.source, t.findingKey ?? null, t.meta != null ? JSON.stringify(t.meta) : null)
    return this.task(id) as StoredTask
  }

  task (id: string): StoredTask | undefined {
    const r = this.s.taskGet.get(id) as TaskRow | undefined
    return r != null ? taskFromRow(r) : undefined
  }

  /** newest first */
  tasks (opts: { state?: TaskState, limit?: number, offset?: number } = {}): StoredTask[] {
    const limit = clampLimit(opts.limit ?? 50)
    const offset = Math.max(0, Math.floor(opts.offset ?? 0))
    const rows = opts.state != null ? this.s.taskListState.all(opts.state, limit, offset) : this.s.taskList.all(limit, offset)
    return (rows as unknown as TaskRow[]).map(taskFromRow)
  }

  tasksOfCycle (cycle: number): StoredTask[] {
    return (this.s.taskListCycle.all(cycle) as unknown as TaskRow[]).map(taskFromRow)
  }

  taskCount (): number {
    return Number((this.s.taskCount.get() as { n: number }).n)
  }

  /** an open task (not executed, not rejected) for this finding created since `sinceMs` */
  openTaskFor (findingKey: string, sinceMs: number): StoredTask | undefined {
    const r = this.s.taskOpenByFinding.get(findingKey, sinceMs) as TaskRow | undefined
    return r != null ? taskFromRow(r) : undefined
  }

  setTaskState (id: string, state: TaskState, now = Date.now()): void {
    this.s.taskSetState.run(state, now, id)
  }

  setTaskOutput (id: string, output: string, now = Date.now()): void {
    this.s.taskSetOutput.run(output, now, id)
  }

  // ---------------------------------------------------------------- approvals

  /**
   * A human decision on a task. A rejection marks the task rejected; an approval is recorded
   * only (the agent never executes above read-only: the approver carries the action out).
   */
  addApproval (taskId: string, a: { by: string, decision: 'approve' | 'reject', note?: string }, now = Date.now()): Approval {
    if (this.task(taskId) == null) throw new Error(`no task "${taskId}"`)
    if (a.decision !== 'approve' && a.decision !== 'reject') throw new Error('decision must be approve or reject')
    this.tx(() => {
      this.s.approvalInsert.run(taskId, now, a.by, a.decision, a.note ?? '')
      if (a.decision === 'reject') this.s.taskSetState.run('rejected', now, taskId)
    })
    return { taskId, at: now, by: a.by, decision: a.decision, note: a.note ?? '' }
  }

  approvals (taskId: string): Approval[] {
    return (this.s.approvalsOf.all(taskId) as any[]).map(r => ({ taskId: r.task_id, at: Number(r.at), by: r.by, decision: r.decision, note: r.note }))
  }

  // ---------------------------------------------------------------- retention

  prune (now = Date.now()): void {
    this.tx(() => {
      this.s.pruneSamplesAge.run(now - this.opts.maxSampleAgeMs)
      this.s.pruneSamplesCount.run(this.opts.maxSamples)
      this.s.pruneCycles.run(this.opts.maxCycles)
      this.s.pruneApprovals.run(this.opts.maxTasks)
      this.s.pruneTasks.run(this.opts.maxTasks)
    })
  }

  sampleCount (): number {
    return Number((this.db.prepare('SELECT COUNT(*) AS n FROM samples').get() as { n: number }).n)
  }

  close (): void {
    if (this.db.isOpen) this.db.close()
  }

  private tx (fn: () => void): void {
    this.db.exec('BEGIN')
    try {
      fn()
      this.db.exec('COMMIT')
    } catch (err) {
      this.db.exec('ROLLBACK')
      throw err
    }
  }
}

function clampLimit (n: number, max = 1000): number {
  return Math.max(1, Math.min(max, Math.floor(n)))
}

function cycleFromRow (r: any): CycleRecord {
  return { id: Number(r.id), started: Number(r.started), ...(r.ended != null ? { ended: Number(r.ended) } : {}), state: r.state, ...(r.mode != null ? { mode: r.mode } : {}), summary: JSON.parse(r.summary ?? '{}') }
}

function sampleFromRow (r: any): StoredSample {
  return { cycle: Number(r.cycle), at: Number(r.at), name: r.name, labels: JSON.parse(r.labels), value: Number(r.value) }
}

function taskFromRow (r: TaskRow): StoredTask {
  return {
    id: r.id,
    created: Number(r.created),
    updated: Number(r.updated),
    cycle: Number(r.cycle),
    domain: r.domain,
    title: r.title,
    rationale: r.rationale,
    evidence: JSON.parse(r.evidence),
    actions: JSON.parse(r.actions),
    state: r.state as TaskState,
    ...(r.output != null ? { output: r.output } : {}),
    source: r.source,
    ...(r.finding_key != null ? { findingKey: r.finding_key } : {}),
    ...(r.meta != null ? { meta: JSON.parse(r.meta) } : {})
  }
}
