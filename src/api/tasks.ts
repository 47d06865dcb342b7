/**
 * The task queue of the self-prompting agent, in an embedded SQLite database (Node 22's
 * built-in `node:sqlite`). The API queues tasks (gRPC SubmitSelfTask). `next()` / `claim()` /
 * `update()` are the consumer's side, but no part of the product consumes the queue today:
 * `meshllm agent` keeps its own store (src/agent/store.ts). A file path persists across restarts;
 * ':memory:' (the default) does not.
 *
 * Every task carries its safety tier (src/governance/tiers.ts `classifyAction`: the closed
 * action catalogue; anything unknown or invalid is DEPLOY_MAJOR) and the approval state the
 * governance gate gave it when it was queued (`assessTask`).
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite'
import { createRequire } from 'node:module'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { classifyAction, gate, gateContext, Tier } from '../governance/tiers.js'

export type TaskStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled'
export const TASK_STATUSES: readonly TaskStatus[] = ['queued', 'running', 'done', 'failed', 'cancelled']

/** 'auto': may run now; 'pending': allowed once `needs` are met (review, votes); 'blocked': not in this phase / mode */
export type Approval = 'auto' | 'pending' | 'blocked'

export interface TaskAssessment {
  tier: Tier
  tierName: string
  knownAction: boolean
  approval: Approval
  approvalReason: string
  needs: string[]
}

export interface NewTask {
  type: string
  params?: Record<string, unknown>
  description?: string
  priority?: number
  source?: string
}

export interface TaskRecord extends TaskAssessment {
  id: string
  type: string
  params: Record<string, unknown>
  description: string
  status: TaskStatus
  priority: number
  source: string
  createdAtMs: number
  updatedAtMs: number
  result?: unknown
}

export interface TaskUpdate {
  status?: TaskStatus
  result?: unknown
  approval?: Approval
  approvalReason?: string
  needs?: string[]
}

/** Tier and approval of an action under the current governance state (phase, halt, read-only). */
export function assessTask (type: string, params: Record<string, unknown>, governance: { halted?: unknown, readOnly: boolean, phase: number }, now = Date.now()): TaskAssessment {
  const action = { type, params }
  const c = classifyAction(action)
  const d = gate(action, gateContext(governance, now))
  return {
    tier: c.tier,
    tierName: Tier[c.tier],
    knownAction: c.known,
    approval: d.executeNow ? 'auto' : d.allowed ? 'pending' : 'blocked',
    approvalReason: d.reason,
    needs: d.needs
  }
}

interface Row {
  id: string
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
}

export class TaskStore {
  readonly path: string
  private readonly db: DatabaseSync
  private readonly stmts: Record<'insert' | 'get' | 'next' | 'claim', StatementSync>

  constructor (path = ':memory:') {
    this.path = path
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    // loaded on first use: node:sqlite prints an ExperimentalWarning when loaded, and a CLI
    // that merely imports the API (without serving it) should not
    const { DatabaseSync: Database } = createRequire(import.meta.url)('node:sqlite') as typeof import('node:sqlite')
    this.db = new Database(path)
    if (path !== ':memory:') this.db.exec('PRAGMA journal_mode = WAL')
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
        result TEXT
      );
      CREATE INDEX IF NOT EXISTS tasks_queue ON tasks (status, priority DESC, seq);
    `)
    this.stmts = {
      insert: this.db.prepare(`INSERT INTO tasks (id, type, params, description, status, tier, known_action, approval, approval_reason, needs, priority, source, created_at, updated_at)
        VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      get: this.db.prepare('SELECT * FROM tasks WHERE id = ?'),
      next: this.db.prepare("SELECT * FROM tasks WHERE status = 'queued' AND approval = 'auto' ORDER BY priority DESC, seq LIMIT 1"),
      claim: this.db.prepare("UPDATE tasks SET status = 'running', updated_at = ? WHERE id = ? AND status = 'queued'")
    }
  }

  /** Queues a task with its assessment (tier, approval); status 'queued'. */
  add (task: NewTask, assessment: TaskAssessment, now = Date.now()): TaskRecord {
    const id = `task_${now.toString(36)}${randomBytes(5).toString('hex')}`
    this.stmts.insert.run(id, task.type, JSON.stringify(task.params ?? {}), task.description ?? '', assessment.tier, assessment.knownAction ? 1 : 0,
      assessment.approval, assessment.approvalReason, JSON.stringify(assessment.needs), Math.trunc(task.priority ?? 0), task.source ?? '', now, now)
    return this.get(id) as TaskRecord
  }

  get (id: string): TaskRecord | undefined {
    const row = this.stmts.get.get(id) as Row | undefined
    return row != null ? fromRow(row) : undefined
  }

  /** newest first */
  list (opts: { status?: TaskStatus, limit?: number, offset?: number } = {}): { tasks: TaskRecord[], total: number } {
    const limit = Math.max(1, Math.min(500, opts.limit ?? 50))
    const offset = Math.max(0, opts.offset ?? 0)
    const where = opts.status != null ? 'WHERE status = ?' : ''
    const args = opts.status != null ? [opts.status] : []
    const total = (this.db.prepare(`SELECT COUNT(*) AS n FROM tasks ${where}`).get(...args) as { n: number }).n
    const rows = this.db.prepare(`SELECT * FROM tasks ${where} ORDER BY seq DESC LIMIT ? OFFSET ?`).all(...args, limit, offset) as unknown as Row[]
    return { tasks: rows.map(fromRow), total: Number(total) }
  }

  /** the queued task a consumer should run next: approval 'auto', highest priority, oldest first (no consumer calls it yet) */
  next (): TaskRecord | undefined {
    const row = this.stmts.next.get() as Row | undefined
    return row != null ? fromRow(row) : undefined
  }

  /** queued → running; false when someone else claimed it (or it is not queued) */
  claim (id: string, now = Date.now()): boolean {
    return Number(this.stmts.claim.run(now, id).changes) === 1
  }

  update (id: string, patch: TaskUpdate, now = Date.now()): TaskRecord | undefined {
    const sets: string[] = ['updated_at = ?']
    const args: Array<string | number | null> = [now]
    if (patch.status != null) { sets.push('status = ?'); args.push(patch.status) }
    if (patch.result !== undefined) { sets.push('result = ?'); args.push(JSON.stringify(patch.result)) }
    if (patch.approval != null) { sets.push('approval = ?'); args.push(patch.approval) }
    if (patch.approvalReason != null) { sets.push('approval_reason = ?'); args.push(patch.approvalReason) }
    if (patch.needs != null) { sets.push('needs = ?'); args.push(JSON.stringify(patch.needs)) }
    this.db.prepare(`UPDATE tasks SET ${sets.join(', ')} WHERE id = ?`).run(...args, id)
    return this.get(id)
  }

  close (): void {
    if (this.db.isOpen) this.db.close()
  }
}

function fromRow (r: Row): TaskRecord {
  return {
    id: r.id,
    type: r.type,
    params: JSON.parse(r.params),
    description: r.description,
    status: r.status as TaskStatus,
    tier: Number(r.tier) as Tier,
    tierName: Tier[Number(r.tier)],
    knownAction: Number(r.known_action) === 1,
    approval: r.approval as Approval,
    approvalReason: r.approval_reason,
    needs: JSON.parse(r.needs),
    priority: Number(r.priority),
    source: r.source,
    createdAtMs: Number(r.created_at),
    updatedAtMs: Number(r.updated_at),
    ...(r.result != null ? { result: JSON.parse(r.result) } : {})
  }
}
