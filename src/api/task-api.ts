/**
 * The task facade of the API: SubmitSelfTask, GetTask and ListTasks over the node's one task
 * table (src/tasks/store.ts), where the agent's tasks are too: ListTasks and GetTask show
 * both (`origin`). Every field a caller gives is bounded here; each submitted task is
 * assessed (tier, approval) against the governance state. Nothing runs a submitted task.
 */
import type { GovernanceService } from '../governance/service.js'
import type { GovernanceSnapshot } from '../governance/state.js'
import { ApiError, invalid } from './errors.js'
import { TASK_STATUSES, assessTask, type TaskRecord, type TaskStatus } from '../tasks/model.js'
import type { TaskStore } from '../tasks/store.js'
import type { DashboardTask } from './types.js'
import { errorMessage } from '../util/errors.js'

/** the bounds of a submitted task */
export const TASK_LIMITS = Object.freeze({
  paramsJsonBytes: 64 * 1024,
  descriptionChars: 4096,
  priority: 1_000_000,
  sourceChars: 256,
  idChars: 128,
  listLimit: 500,
  defaultListLimit: 50
})

export interface SubmitTaskParams {
  type: string
  paramsJson?: string
  description?: string
  priority?: number
  source?: string
}

export interface ListTasksParams {
  status?: string
  limit?: number
  offset?: number
}

export interface TaskList {
  tasks: TaskRecord[]
  total: number
}

export class TasksApi {
  /** `own`: the store was made for this API and is closed with it */
  constructor (readonly store: TaskStore, private readonly governance: GovernanceService | undefined, private readonly own: boolean) {}

  submit (t: SubmitTaskParams): TaskRecord {
    const L = TASK_LIMITS
    if (typeof t.type !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(t.type)) {
      throw invalid('type must be 1–128 characters of [A-Za-z0-9_.:-] (an action type, e.g. "report")', 'type')
    }
    let params: Record<string, unknown> = {}
    if (t.paramsJson != null && t.paramsJson !== '') {
      if (t.paramsJson.length > L.paramsJsonBytes) throw invalid('params_json exceeds 64 KiB', 'params_json')
      let v: unknown
      try { v = JSON.parse(t.paramsJson) } catch (err) { throw invalid(`params_json is not JSON: ${errorMessage(err)}`, 'params_json') }
      if (v == null || typeof v !== 'object' || Array.isArray(v)) throw invalid('params_json must be a JSON object', 'params_json')
      params = v as Record<string, unknown>
    }
    const description = t.description ?? ''
    if (description.length > L.descriptionChars) throw invalid(`description exceeds ${L.descriptionChars} characters`, 'description')
    const priority = t.priority ?? 0
    if (!Number.isSafeInteger(priority) || Math.abs(priority) > L.priority) {
      throw invalid(`priority must be an integer in [-${L.priority}, ${L.priority}]`, 'priority')
    }
    const source = (t.source ?? '').slice(0, L.sourceChars)
    const snap: GovernanceSnapshot | { readOnly: boolean, phase: number } = this.governance?.state.snapshot() ?? { readOnly: false, phase: 0 }
    return this.store.add({ type: t.type, params, description, priority, source }, assessTask(t.type, params, snap))
  }

  get (id: string): TaskRecord {
    if (typeof id !== 'string' || id.length === 0 || id.length > TASK_LIMITS.idChars) throw invalid('id is required', 'id')
    const t = this.store.get(id)
    if (t == null) throw new ApiError('not_found', `no task "${id.slice(0, TASK_LIMITS.idChars)}"`, 'id', 'task_not_found')
    return t
  }

  list (o: ListTasksParams): TaskList {
    const status = o.status == null || o.status === '' ? undefined : o.status
    if (status != null && !TASK_STATUSES.includes(status as TaskStatus)) throw invalid(`status must be one of ${TASK_STATUSES.join(', ')}`, 'status')
    if (o.limit != null && o.limit > TASK_LIMITS.listLimit) throw invalid(`limit must be at most ${TASK_LIMITS.listLimit}`, 'limit')
    const limit = o.limit != null && o.limit > 0 ? o.limit : TASK_LIMITS.defaultListLimit
    return this.store.list({ status: status as TaskStatus | undefined, limit, offset: o.offset ?? 0 })
  }

  /** the dashboard's view: the total and the `n` latest tasks, in brief */
  latest (n = 10): { total: number, latest: DashboardTask[] } {
    const r = this.store.list({ limit: n })
    return {
      total: r.total,
      latest: r.tasks.map(t => ({
        id: t.id,
        origin: t.origin,
        state: t.state,
        status: t.status,
        approval: t.approval,
        tierName: t.tierName,
        type: t.type,
        title: (t.title !== '' ? t.title : t.description).slice(0, 160),
        domain: t.domain,
        source: t.source.slice(0, 64),
        createdAtMs: t.createdAtMs
      }))
    }
  }

  close (): void {
    if (this.own) this.store.close()
  }
}
