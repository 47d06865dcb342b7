/**
 * The node's tasks: one vocabulary for the one task table (src/tasks/store.ts), whoever
 * recorded the task: the API (gRPC SubmitSelfTask, `origin: 'api'`) or the self-prompting
 * agent (a proposal, a detector's report, the audit: `origin: 'agent'`).
 *
 * A task's stored facts are its lifecycle `status` (the API's vocabulary, on the wire) and
 * the governance gate's `approval` (+ `needs`, `tier`). The agent's `state` (`meshllm tasks
 * --state`, `meshllm agent --json`) is not stored: it is derived from them, one way, by
 * `stateOf` (the table is in docs/agent.md and docs/api.md):
 *
 *   done → executed    cancelled → rejected    running → running    failed → failed
 *   queued + auto → queued     queued + blocked → blocked
 *   queued + pending → awaiting_quorum (tier ≥ DEPLOY_MINOR) | awaiting_review (below)
 *
 * No import of node:sqlite here: the CLI's light command modules read TASK_STATES.
 */
import { Tier, classifyAction, gate, gateContext } from '../governance/tiers.js'

/** who recorded the task */
export type TaskOrigin = 'api' | 'agent'
export const TASK_ORIGINS: readonly TaskOrigin[] = ['api', 'agent']

/**
 * The lifecycle (the API's `status`). Nothing in meshllm sets `running` or `failed`: no part
 * runs a queued task; they stay in the vocabulary the wire and older files use.
 */
export type TaskStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled'
export const TASK_STATUSES: readonly TaskStatus[] = ['queued', 'running', 'done', 'failed', 'cancelled']

/** 'auto': may run now; 'pending': allowed once `needs` are met (review, votes); 'blocked': not in this phase / mode */
export type Approval = 'auto' | 'pending' | 'blocked'

/** what the agent's gate made of one action */
export type ActionState = 'queued' | 'executed' | 'awaiting_review' | 'awaiting_quorum' | 'blocked' | 'rejected'
export const ACTION_STATES: readonly ActionState[] = ['queued', 'executed', 'awaiting_review', 'awaiting_quorum', 'blocked', 'rejected']

/** the agent's view of a task: its action states plus the two lifecycle states they lack */
export type TaskState = ActionState | 'running' | 'failed'
export const TASK_STATES: readonly TaskState[] = ['queued', 'running', 'executed', 'failed', 'awaiting_review', 'awaiting_quorum', 'blocked', 'rejected']

/** a task's state is its actions' "worst", in this order */
const STATE_ORDER: readonly ActionState[] = ['rejected', 'blocked', 'awaiting_quorum', 'awaiting_review', 'queued', 'executed']

/** A task the store refuses: an action state its tier cannot have, an unknown tier or state, a bad approval. */
export class InvalidTaskError extends Error {
  static override name = 'InvalidTaskError'
  override name = 'InvalidTaskError'
}

/** No task with this id (an approval for a task that is not, or no longer, stored). */
export class TaskNotFoundError extends Error {
  static override name = 'TaskNotFoundError'
  override name = 'TaskNotFoundError'
}

export interface TaskAssessment {
  tier: Tier
  tierName: string
  knownAction: boolean
  approval: Approval
  approvalReason: string
  needs: string[]
}

/** one action of an agent task, as gated */
export interface TaskAction {
  type: string
  params: Record<string, unknown>
  /** Tier name (READ_ONLY, SUGGEST, SANDBOX_TEST, DEPLOY_MINOR, DEPLOY_MAJOR) */
  tier: string
  /** the catalogue knew the type and the params passed its schema */
  known: boolean
  /** what the gate decided for this action */
  state: ActionState
  reason: string
  needs: string[]
}

/** a task submitted through the API (TasksApi bounds every field first) */
export interface NewTask {
  type: string
  params?: Record<string, unknown>
  description?: string
  priority?: number
  source?: string
}

/** a task the agent records: its actions already gated */
export interface AgentTask {
  cycle: number
  domain: string
  title: string
  rationale: string
  evidence: string[]
  actions: TaskAction[]
  /** what the read-only actions wrote (stored as the task's result) */
  output?: string
  /** 'mesh' (proposed by a generation), 'audit', or 'detector' (deterministic, when no generation was possible) */
  source: string
  /** the finding this task answers (kind:subject), to avoid repeating open tasks */
  findingKey?: string
  /** generation facts (experts, tokens, forced steps, raw text…) */
  meta?: Record<string, unknown>
  /** default 0 */
  priority?: number
}

export interface TaskRecord extends TaskAssessment {
  id: string
  origin: TaskOrigin
  /** the action: the submitted one; for an agent task the action that decided its state (its first action if none did) */
  type: string
  params: Record<string, unknown>
  /** the submitter's description; an agent task's rationale */
  description: string
  status: TaskStatus
  /** the agent's view, derived (stateOf) */
  state: TaskState
  priority: number
  source: string
  createdAtMs: number
  updatedAtMs: number
  /** an agent task's read-only output is a JSON string here */
  result?: unknown
  /** an agent task's ('' for an API task) */
  title: string
  domain: string
  /** an agent task's ([] for an API task) */
  evidence: string[]
  /** an agent task's actions as gated; an API task's one action (derived from type, params, tier and approval) */
  actions: TaskAction[]
  cycle?: number
  findingKey?: string
  meta?: Record<string, unknown>
}

/** An agent task's read-only output (its `result` when a string). */
export function outputOf (t: TaskRecord): string | undefined {
  return typeof t.result === 'string' ? t.result : undefined
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

/** The agent's view of stored facts (the table at the top of this file). */
export function stateOf (status: TaskStatus, approval: Approval, tier: Tier): TaskState {
  switch (status) {
    case 'done': return 'executed'
    case 'cancelled': return 'rejected'
    case 'running': case 'failed': return status
    default:
      if (approval === 'auto') return 'queued'
      if (approval === 'blocked') return 'blocked'
      return tier >= Tier.DEPLOY_MINOR ? 'awaiting_quorum' : 'awaiting_review'
  }
}

/** `stateOf` as an SQL condition over the tasks table (the `meshllm tasks --state` filter) */
export function stateCondition (state: TaskState): { sql: string, args: Array<string | number> } {
  switch (state) {
    case 'executed': return { sql: "status = 'done'", args: [] }
    case 'rejected': return { sql: "status = 'cancelled'", args: [] }
    case 'running': case 'failed': return { sql: 'status = ?', args: [state] }
    case 'queued': return { sql: "status = 'queued' AND approval = 'auto'", args: [] }
    case 'blocked': return { sql: "status = 'queued' AND approval = 'blocked'", args: [] }
    case 'awaiting_quorum': return { sql: "status = 'queued' AND approval = 'pending' AND tier >= ?", args: [Tier.DEPLOY_MINOR] }
    case 'awaiting_review': return { sql: "status = 'queued' AND approval = 'pending' AND tier < ?", args: [Tier.DEPLOY_MINOR] }
    default: throw new InvalidTaskError(`unknown task state "${String(state).slice(0, 64)}"`)
  }
}

/** the stored lifecycle and approval of an agent task in this state (the inverse of stateOf) */
export function storedOf (state: ActionState): { status: TaskStatus, approval: Approval } {
  switch (state) {
    case 'executed': return { status: 'done', approval: 'auto' }
    case 'rejected': return { status: 'cancelled', approval: 'blocked' }
    case 'queued': return { status: 'queued', approval: 'auto' }
    case 'blocked': return { status: 'queued', approval: 'blocked' }
    default: return { status: 'queued', approval: 'pending' }
  }
}

/** what an agent task's actions make of its stored columns */
export interface AgentTaskFacts extends TaskAssessment {
  state: ActionState
  status: TaskStatus
  type: string
  params: Record<string, unknown>
}

const tierOf = (name: string): Tier => {
  const t = (Tier as unknown as Record<string, unknown>)[name]
  if (typeof t !== 'number') throw new InvalidTaskError(`unknown tier "${String(name).slice(0, 64)}"`)
  return t as Tier
}

/**
 * The stored facts of an agent task from its gated actions: its state is the actions'
 * worst; status and approval follow from it; its tier is its highest action's. An action
 * the agent ran, or one that waits for review, is below DEPLOY_MINOR, and one that waits for
 * a quorum is DEPLOY_MINOR or above (the agent's gate, src/agent/agent.ts): anything else is
 * refused (InvalidTaskError), so that `stateOf` gives back the state the agent decided.
 */
export function agentTaskFacts (actions: readonly TaskAction[]): AgentTaskFacts {
  let tier = Tier.READ_ONLY
  for (const a of actions) {
    const t = tierOf(a.tier)
    if (!ACTION_STATES.includes(a.state)) throw new InvalidTaskError(`unknown action state "${String(a.state).slice(0, 64)}"`)
    if (a.state === 'awaiting_quorum' && t < Tier.DEPLOY_MINOR) throw new InvalidTaskError(`a ${a.tier} action cannot await a quorum (only DEPLOY_MINOR and above)`)
    if ((a.state === 'queued' || a.state === 'executed' || a.state === 'awaiting_review') && t >= Tier.DEPLOY_MINOR) throw new InvalidTaskError(`a ${a.tier} action cannot be ${a.state} (it needs a quorum, or is blocked or rejected)`)
    if (t > tier) tier = t
  }
  const state = STATE_ORDER.find(s => actions.some(a => a.state === s)) ?? 'queued'
  const lead = actions.find(a => a.state === state) ?? actions[0]
  const needs = [...new Set(actions.filter(a => a.state !== 'executed').flatMap(a => a.needs))]
  return {
    state,
    ...storedOf(state),
    approvalReason: lead?.reason ?? '',
    needs,
    tier,
    tierName: Tier[tier],
    knownAction: actions.every(a => a.known),
    type: lead?.type ?? '',
    params: lead?.params ?? {}
  }
}
