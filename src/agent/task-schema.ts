/**
 * The fixed JSON shape of a task the mesh proposes, as a constraint schema
 * (src/agent/json-constraint.ts):
 *
 *   {"domain":D,"title":S,"rationale":S,"evidence":[S…],"actions":[{"type":T,"params":{…}}…]}
 *
 * D: an enum of domains; T: an enum from the closed action catalogue
 * (src/governance/tiers.ts ACTIONS); `params` follow that type's catalogue schema (required
 * parameters first, in catalogue order, then optional ones), mirrored here by PARAM_SPECS
 * (a unit test checks the mirror against ACTIONS). Lengths are capped below the catalogue's
 * maxima so a generation is short and always terminates. Per finding, the agent narrows the
 * schema: the domains and action types that fit the finding, and the values that are known
 * (`expert` is one of the experts the finding names).
 */
import {
  BASE58, DIGIT, HEX, KEYCHAR, PATHCHAR, SchemaError, arr, enumOf, field, int, num, obj, pattern, rec, scalar, text,
  type Field, type SchemaNode, type StrNode
} from './json-constraint.js'

export const DOMAINS = ['scheduler', 'security', 'storage', 'network', 'capacity', 'governance'] as const
export type Domain = typeof DOMAINS[number]

export interface TaskLimits {
  title: number
  rationale: number
  evidenceItems: number
  evidenceChars: number
  actions: number
  /** reason / free-text parameters */
  reason: number
  body: number
  summary: number
  /** strings inside suggest_config values, model names */
  shortText: number
  /** peer ids when no expert list narrows them */
  peerChars: number
}

export const DEFAULT_LIMITS: TaskLimits = { title: 80, rationale: 200, evidenceItems: 3, evidenceChars: 120, actions: 2, reason: 120, body: 300, summary: 200, shortText: 64, peerChars: 64 }

/** a parameter's schema: a mirror of the catalogue's check functions */
export type ParamSpec =
  | { kind: 'text', max: number, min?: number }
  | { kind: 'peer' }
  | { kind: 'configKey' }
  | { kind: 'scalar' }
  | { kind: 'int', min: number, max: number }
  | { kind: 'num', min: number, max: number }
  | { kind: 'enum', values: string[] }
  | { kind: 'weights' }
  | { kind: 'protocol' }
  | { kind: 'semver' }
  | { kind: 'sha256' }

export interface ActionParamSpec { required: Record<string, ParamSpec>, optional: Record<string, ParamSpec> }

/** the catalogue (src/governance/tiers.ts ACTIONS), parameter by parameter */
export const PARAM_SPECS: Readonly<Record<string, ActionParamSpec>> = Object.freeze({
  report: { required: { title: { kind: 'text', max: 200 } }, optional: { body: { kind: 'text', min: 0, max: 65536 } } },
  flag_expert: { required: { expert: { kind: 'peer' }, reason: { kind: 'text', max: 1000 } }, optional: {} },
  suggest_config: { required: { key: { kind: 'configKey' }, value: { kind: 'scalar' } }, optional: { reason: { kind: 'text', max: 1000 } } },
  adjust_k: { required: { k: { kind: 'int', min: 1, max: 64 } }, optional: {} },
  benchmark_expert: { required: { expert: { kind: 'peer' } }, optional: { suite: { kind: 'configKey' } } },
  ban_expert: { required: { expert: { kind: 'peer' }, reason: { kind: 'text', max: 1000 } }, optional: { durationHours: { kind: 'num', min: 0, max: 8760 } } },
  set_selection_weights: { required: { weights: { kind: 'weights' } }, optional: {} },
  change_aggregation_rule: { required: { rule: { kind: 'enum', values: ['mixture', 'product'] } }, optional: {} },
  update_protocol: { required: { protocol: { kind: 'protocol' }, version: { kind: 'semver' } }, optional: {} },
  change_governance: { required: { summary: { kind: 'text', max: 2000 } }, optional: {} },
  deploy_model: { required: { model: { kind: 'text', max: 256 }, sha256: { kind: 'sha256' } }, optional: {} }
} satisfies Record<string, ActionParamSpec>)

export const ACTION_TYPES = Object.keys(PARAM_SPECS)

export interface TaskSchemaOptions {
  /** allowed domains (default: all), the first is the finding's own */
  domains?: readonly string[]
  /** allowed action types (default: the whole catalogue) */
  actionTypes?: readonly string[]
  /** when given, `expert` parameters and selection-weight keys are one of these peer ids */
  experts?: readonly string[]
  /** when given, suggest_config keys are one of these */
  configKeys?: readonly string[]
  limits?: Partial<TaskLimits>
}

function paramNode (name: string, p: ParamSpec, o: TaskSchemaOptions, L: TaskLimits): SchemaNode {
  const peer = (): SchemaNode => o.experts != null && o.experts.length > 0 ? enumOf(o.experts) : pattern({ cls: BASE58, min: 1, max: Math.min(128, L.peerChars) })
  switch (p.kind) {
    case 'text': {
      const cap = name === 'reason' ? L.reason : name === 'body' ? L.body : name === 'summary' ? L.summary : name === 'title' ? L.title : L.shortText
      return text(p.min ?? 1, Math.max(p.min ?? 1, Math.min(p.max, cap)))
    }
    case 'peer': return peer()
    case 'configKey': return o.configKeys != null && o.configKeys.length > 0 && name === 'key' ? enumOf(o.configKeys) : pattern({ cls: KEYCHAR, min: 1, max: Math.min(128, L.shortText) })
    case 'scalar': return scalar(text(0, L.shortText), num(0, 1e6, 3))
    case 'int': return int(p.min, p.max)
    case 'num': return num(p.min, p.max, 3)
    case 'enum': return enumOf(p.values)
    case 'weights': {
      const keys: readonly string[] | StrNode = o.experts != null && o.experts.length > 0 ? o.experts : pattern({ cls: BASE58, min: 1, max: Math.min(128, L.peerChars) })
      return rec(keys, num(0, 1, 3), 1, Math.min(256, Array.isArray(keys) ? keys.length : 8))
    }
    case 'protocol': return pattern({ lit: '/meshllm/' }, { cls: PATHCHAR, min: 1, max: Math.min(119, L.shortText) })
    case 'semver': return pattern({ cls: DIGIT, min: 1, max: 8 }, { lit: '.' }, { cls: DIGIT, min: 1, max: 8 }, { lit: '.' }, { cls: DIGIT, min: 1, max: 8 })
    case 'sha256': return pattern({ cls: HEX, min: 64, max: 64 })
  }
}

/** the params object of one action type */
export function paramsSchema (type: string, o: TaskSchemaOptions = {}): SchemaNode {
  const spec = PARAM_SPECS[type]
  if (spec == null) throw new SchemaError(`unknown action type "${type}"`)
  const L = { ...DEFAULT_LIMITS, ...o.limits }
  const fields: Field[] = [
    ...Object.entries(spec.required).map(([k, p]) => field(k, paramNode(k, p, o, L), true)),
    ...Object.entries(spec.optional).map(([k, p]) => field(k, paramNode(k, p, o, L), false))
  ]
  return obj(fields)
}

/** the schema of one action: {"type": T, "params": params(T)} */
export function actionSchema (o: TaskSchemaOptions = {}): SchemaNode {
  const types = [...(o.actionTypes ?? ACTION_TYPES)]
  for (const t of types) if (PARAM_SPECS[t] == null) throw new SchemaError(`unknown action type "${t}"`)
  const params = new Map(types.map(t => [t, paramsSchema(t, o)]))
  return obj([
    field('type', enumOf(types)),
    field('params', (cap) => {
      const p = params.get(cap.type)
      if (p == null) throw new SchemaError(`params before a known type (${String(cap.type)})`)
      return p
    })
  ])
}

/** the whole task */
export function taskSchema (o: TaskSchemaOptions = {}): SchemaNode {
  const L = { ...DEFAULT_LIMITS, ...o.limits }
  return obj([
    field('domain', enumOf([...(o.domains ?? DOMAINS)])),
    field('title', text(1, L.title)),
    field('rationale', text(1, L.rationale)),
    field('evidence', arr(text(1, L.evidenceChars), 0, L.evidenceItems)),
    field('actions', arr(actionSchema(o), 1, L.actions))
  ])
}

export interface ProposedAction { type: string, params: Record<string, unknown> }
export interface ProposedTask {
  domain: string
  title: string
  rationale: string
  evidence: string[]
  actions: ProposedAction[]
}

/** Checks the shape of a parsed task (not the action parameters: classifyAction does that). Throws SchemaError. */
export function checkTaskShape (v: unknown): ProposedTask {
  const fail = (why: string): never => { throw new SchemaError(`not a task: ${why}`) }
  if (v == null || typeof v !== 'object' || Array.isArray(v)) fail('not an object')
  const t = v as Record<string, unknown>
  const keys = Object.keys(t).sort().join(',')
  if (keys !== 'actions,domain,evidence,rationale,title') fail(`fields must be domain, title, rationale, evidence, actions (got ${keys.slice(0, 80)})`)
  if (typeof t.domain !== 'string' || t.domain.length === 0) fail('domain must be a string')
  if (typeof t.title !== 'string') fail('title must be a string')
  if (typeof t.rationale !== 'string') fail('rationale must be a string')
  if (!Array.isArray(t.evidence) || !t.evidence.every(e => typeof e === 'string')) fail('evidence must be an array of strings')
  if (!Array.isArray(t.actions) || t.actions.length === 0) fail('actions must be a non-empty array')
  for (const a of t.actions as unknown[]) {
    if (a == null || typeof a !== 'object' || Array.isArray(a)) fail('an action must be an object')
    const x = a as Record<string, unknown>
    if (typeof x.type !== 'string') fail('an action needs a type')
    if (x.params == null || typeof x.params !== 'object' || Array.isArray(x.params)) fail('an action needs params (an object)')
  }
  return t as unknown as ProposedTask
}
