/**
 * What the agent says and shows: the prompt that asks the mesh for a task, the merge of the
 * model's evidence with the detector's, the task views of `meshllm agent|tasks --json`, and
 * the tokenizer's piece table the JSON constraint works on.
 */
import type { Token } from 'node-llama-cpp'
import type { RouterTokenizer } from '../router/tokenizer.js'
import { ACTIONS, Tier } from '../governance/tiers.js'
import { buildPieceTable, type PieceTable } from './json-constraint-tokens.js'
import type { TaskStore } from '../tasks/store.js'
import type { TaskOrigin, TaskRecord, TaskState } from '../tasks/model.js'
import type { Finding } from './detectors.js'

/** one action in the `meshllm agent --json` / `meshllm tasks --json` output */
export interface TaskActionView { type: string, tier: string, params: Record<string, unknown> }

/** one task in the `meshllm agent --json` / `meshllm tasks --json` output */
export interface TaskView {
  id: string
  domain: string
  title: string
  rationale: string
  evidence: string[]
  actions: TaskActionView[]
  /** the agent's view of the task's status and approval (src/tasks/model.ts stateOf) */
  state: TaskState
  /** 'agent' (proposed, reported or audited by the agent) or 'api' (SubmitSelfTask: no domain or title, its description as rationale) */
  origin: TaskOrigin
}

const pieceTables = new WeakMap<object, PieceTable>()

/** each token's text, computed once per tokenizer (≈ 0.2 s for 128,256 tokens) */
export function tokenizerPieceTable (tok: RouterTokenizer): PieceTable {
  let t = pieceTables.get(tok)
  if (t != null) return t
  const texts: Array<string | undefined> = new Array(tok.vocabSize)
  for (let id = 0; id < tok.vocabSize; id++) {
    try { texts[id] = tok.model.detokenize([id as Token]) } catch { texts[id] = undefined }
  }
  let eos = tok.model.tokens.eos as number | null | undefined
  if (eos == null) for (let id = 0; id < tok.vocabSize && eos == null; id++) if (tok.isEndOfGeneration(id)) eos = id
  if (eos == null) throw new Error('the tokenizer has no end-of-generation token')
  t = buildPieceTable(texts, eos, id => texts[id] != null && texts[id] !== '' && tok.isEndOfGeneration(id))
  pieceTables.set(tok, t)
  return t
}

/** the prompt that asks the mesh for a task answering a finding */
export function buildPrompt (f: Finding, actionTypes: readonly string[]): string {
  const acts = actionTypes.map(t => `${t} (${Tier[ACTIONS[t].tier].toLowerCase().replace('_', '-')})`).join(', ')
  return [
    'You are the maintenance agent of meshllm, a peer-to-peer language-model mesh.',
    `Finding (${f.severity}): ${f.title}.`,
    f.summary,
    'Evidence:',
    ...f.evidence.map(e => `- ${e}`),
    `Possible actions: ${acts}.`,
    'Answer with one task as JSON: {"domain":…,"title":…,"rationale":…,"evidence":[…],"actions":[{"type":…,"params":{…}}]}',
    ''
  ].join('\n')
}

/** text with at least three letters (a model's punctuation or number runs are not a title) */
export const meaningful = (s: string): boolean => (s.match(/\p{L}/gu) ?? []).length >= 3
const numbersOf = (s: string): string[] => s.match(/\d+(?:\.\d+)?/g) ?? []

/**
 * The model's evidence (meaningful, distinct items) plus every detector line whose numbers
 * no model item cites: the detector's numbers are always in the task.
 */
export function mergeEvidence (model: readonly string[], detector: readonly string[], maxModelItems = 3): { evidence: string[], filled: number } {
  const kept = [...new Set(model.map(s => s.trim()).filter(meaningful))].slice(0, maxModelItems)
  const out = [...kept]
  let filled = 0
  for (const line of detector) {
    const need = numbersOf(line)
    const cited = kept.some(m => need.length > 0 ? need.every(x => m.includes(x)) : m.includes(line))
    if (!cited) { out.push(line); filled++ }
  }
  return { evidence: out, filled }
}

export function taskView (t: TaskRecord): TaskView {
  return {
    id: t.id,
    domain: t.domain,
    title: t.title,
    rationale: t.description,
    evidence: t.evidence,
    actions: t.actions.map(a => ({ type: a.type, tier: a.tier, params: a.params })),
    state: t.state,
    origin: t.origin
  }
}

/** tasks for `meshllm tasks`: the node's task table (the agent's and the API's), newest first */
export function listTasks (store: TaskStore, opts: { state?: TaskState, limit?: number, offset?: number } = {}): TaskView[] {
  return store.list(opts).tasks.map(taskView)
}
