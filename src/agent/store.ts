/**
 * The agent's store: metric samples and cycles in an embedded SQLite database through Node
 * 22's built-in `node:sqlite` (`DatabaseSync`): a real SQL database (indexes, transactions,
 * WAL on files) with no native module to build. Its tasks (and the approvals on them) are in
 * the node's one task table (src/tasks/store.ts `TaskStore`), on the same connection: the
 * API lists the agent's tasks and the agent sees the API's, from one file. A file path
 * persists across runs; ':memory:' does not. Every statement is prepared once. Retention is
 * bounded: samples by age and count, cycles by count, tasks by count (the TaskStore's).
 *
 * Why not better-sqlite3: it is a native addon compiled for the Node that runs `npm ci`
 * (Node 20 here), and meshllm runs under the Node 22 that `npm ci` installs: the addon
 * would fail to load (NODE_MODULE_VERSION mismatch). docs/agent.md has the details.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { TaskStore } from '../tasks/store.js'

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

export interface CycleRecord {
  id: number
  started: number
  ended?: number
  state: CycleState
  mode?: string
  /** summary: experts online, governance counters, streams, capacity… */
  summary: Record<string, unknown>
}

/** a row of `cycles` */
interface CycleRow {
  id: number
  started: number
  ended: number | null
  state: CycleState
  mode: string | null
  summary: string | null
}

/** a row of `samples`: labels as JSON text */
interface SampleRow {
  cycle: number
  at: number
  name: string
  labels: string
  value: number
}

export interface AgentStoreOptions {
  /** samples older than this are dropped (ms, default 7 days) */
  maxSampleAgeMs?: number
  /** at most this many samples (default 200 000) */
  maxSamples?: number
  /** at most this many cycles (default 10 000) */
  maxCycles?: number
  /** at most this many tasks when the store opens the task table itself (TaskStoreOptions.maxTasks, default 10 000) */
  maxTasks?: number
}

export class AgentStore {
  readonly path: string
  /** the node's task table: the agent's tasks, the API's, their approvals */
  readonly tasks: TaskStore
  private readonly db: DatabaseSync
  private readonly s: Record<string, StatementSync>
  private readonly opts: Required<Omit<AgentStoreOptions, 'maxTasks'>>
  private readonly ownTasks: boolean

  /**
   * `tasks`: the task store to share (its database holds the cycles and samples too), or the
   * path of the database to open (':memory:' by default); an opened one is closed with this.
   */
  constructor (tasks: TaskStore | string = ':memory:', opts: AgentStoreOptions = {}) {
    this.ownTasks = typeof tasks === 'string'
    this.tasks = typeof tasks === 'string' ? new TaskStore(tasks, { maxTasks: opts.maxTasks }) : tasks
    this.path = this.tasks.path
    this.opts = { maxSampleAgeMs: 7 * 24 * 3_600_000, maxSamples: 200_000, maxCycles: 10_000, ...opts }
    this.db = this.tasks.db
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
      pruneSamplesAge: p('DELETE FROM samples WHERE at < ?'),
      pruneSamplesCount: p('DELETE FROM samples WHERE id <= (SELECT id FROM samples ORDER BY id DESC LIMIT 1 OFFSET ?)'),
      pruneCycles: p('DELETE FROM cycles WHERE id <= (SELECT id FROM cycles ORDER BY id DESC LIMIT 1 OFFSET ?)')
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
    const r = this.s.cycleGet.get(id) as CycleRow | undefined
    return r != null ? cycleFromRow(r) : undefined
  }

  /** the last finished cycle before `id` (churn, counter deltas) */
  previousCycle (id: number): CycleRecord | undefined {
    const r = this.s.cyclePrev.get(id) as CycleRow | undefined
    return r != null ? cycleFromRow(r) : undefined
  }

  cycles (limit = 20): CycleRecord[] {
    return (this.s.cycleList.all(clampLimit(limit)) as unknown as CycleRow[]).map(cycleFromRow)
  }

  // ---------------------------------------------------------------- samples

  /** stores a cycle's samples in one transaction */
  addSamples (cycle: number, samples: Sample[], now = Date.now()): void {
    this.tasks.tx(() => {
      for (const x of samples) {
        if (!Number.isFinite(x.value)) continue
        this.s.sampleInsert.run(cycle, now, x.name, JSON.stringify(x.labels ?? {}), x.value)
      }
    })
  }

  samples (cycle: number): StoredSample[] {
    return (this.s.samplesOfCycle.all(cycle) as unknown as SampleRow[]).map(sampleFromRow)
  }

  /** newest first */
  series (name: string, opts: { sinceMs?: number, limit?: number } = {}): StoredSample[] {
    const rows = this.s.samplesByName.all(name, opts.sinceMs ?? 0, clampLimit(opts.limit ?? 500, 100_000)) as unknown as SampleRow[]
    return rows.map(sampleFromRow)
  }

  // ---------------------------------------------------------------- retention

  /** samples by age and count, cycles by count (the task table keeps its own bound on every insert) */
  prune (now = Date.now()): void {
    this.tasks.tx(() => {
      this.s.pruneSamplesAge.run(now - this.opts.maxSampleAgeMs)
      this.s.pruneSamplesCount.run(this.opts.maxSamples)
      this.s.pruneCycles.run(this.opts.maxCycles)
    })
  }

  sampleCount (): number {
    return Number((this.db.prepare('SELECT COUNT(*) AS n FROM samples').get() as { n: number }).n)
  }

  /** closes the task store when this store opened it */
  close (): void {
    if (this.ownTasks) this.tasks.close()
  }
}

function clampLimit (n: number, max = 1000): number {
  return Math.max(1, Math.min(max, Math.floor(n)))
}

function cycleFromRow (r: CycleRow): CycleRecord {
  return {
    id: Number(r.id),
    started: Number(r.started),
    ...(r.ended != null ? { ended: Number(r.ended) } : {}),
    state: r.state,
    ...(r.mode != null ? { mode: r.mode } : {}),
    summary: JSON.parse(r.summary ?? '{}') as Record<string, unknown>
  }
}

function sampleFromRow (r: SampleRow): StoredSample {
  return { cycle: Number(r.cycle), at: Number(r.at), name: r.name, labels: JSON.parse(r.labels) as Record<string, string>, value: Number(r.value) }
}
