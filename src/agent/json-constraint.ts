/**
 * Constrained decoding of JSON at the router: an incremental validator (a character-level
 * state machine for one fixed schema) and the `constrain(agg, generated)` hook that keeps
 * only the aggregated candidate tokens whose text keeps the output a valid prefix.
 *
 * - The schema is a small tree of nodes: string enums, strings made of segments (literal
 *   text and character classes with length bounds; free text allows the JSON escapes),
 *   bounded non-negative numbers, true/false, objects with a FIXED key order (optional keys
 *   may be skipped), arrays and records with bounded lengths, and fields whose schema
 *   depends on an earlier enum field of the same object (the action's `params` depend on its
 *   `type`). No whitespace outside strings. Every string and array is bounded, so the
 *   output is bounded.
 * - States are immutable: trying a candidate token never disturbs the current state.
 * - `completion(state)` is a short valid completion of the document from a state. It is
 *   used (1) to force progress when no listed candidate fits: the longest vocabulary token
 *   that is a prefix of the completion is taken, and (2) for the token budget: a candidate
 *   is kept only when the completion after it fits in the tokens left (each forced token
 *   carries at least one character), so the output is ALWAYS a complete document within
 *   `maxTokens`, whatever the model does. Once complete, all mass goes to EOS.
 *
 * The token level (piece tables, the `constrain` hook) is in json-constraint-tokens.ts.
 * See docs/agent.md ("The JSON constraint").
 */
import { BASE58, DIGIT, HEX, KEYCHAR, PATHCHAR, SchemaError, TEXT, arr, bool, charClass, enumOf, field, int, num, obj, pattern, rec, scalar, text, type ArrNode, type CharClass, type EnumNode, type Field, type NumNode, type ObjNode, type RawNode, type RecNode, type ScalarNode, type SchemaNode, type Seg, type StrNode } from './json-schema-nodes.js'

export { BASE58, DIGIT, HEX, KEYCHAR, PATHCHAR, SchemaError, TEXT, arr, bool, charClass, enumOf, field, int, num, obj, pattern, rec, scalar, text, type ArrNode, type CharClass, type EnumNode, type Field, type NumNode, type ObjNode, type RawNode, type RecNode, type ScalarNode, type SchemaNode, type Seg, type StrNode }

// ------------------------------------------------------------------ states

interface EnumS { t: 'enum' | 'raw', typed: string, cands: readonly string[], quotedValue: boolean }
interface StrS { t: 'str', n: StrNode, started: boolean, seg: number, count: number, esc: boolean }
interface NumS { t: 'num', n: NumNode, s: string }
interface ScalarS { t: 'scalar', n: ScalarNode }
interface ObjS { t: 'obj', n: ObjNode, pos: 'start' | 'open' | 'key' | 'colon' | 'value' | 'after', next: number, cur: number, typed: string, cap: Readonly<Record<string, string>>, child?: State }
interface ArrS { t: 'arr', n: ArrNode, pos: 'start' | 'first' | 'item' | 'after', count: number, child?: State }
interface RecS { t: 'rec', n: RecNode, pos: 'start' | 'open' | 'key' | 'colon' | 'value' | 'after', count: number, used: readonly string[], pending: string, child?: State }
type State = EnumS | StrS | NumS | ScalarS | ObjS | ArrS | RecS
interface Done { done: true, consumed: boolean, value?: string }
type R = State | Done | null

/** the validator's state at the top level (immutable) */
export interface RootState { child: State, done: boolean }

const DONE: Done = { done: true, consumed: true }
const isDone = (r: State | Done): r is Done => (r as Done).done === true
const ESCAPES = '"\\/bfnrt'

function init (n: SchemaNode): State {
  switch (n.t) {
    case 'enum': return { t: 'enum', typed: '', cands: n.quoted, quotedValue: true }
    case 'raw': return { t: 'raw', typed: '', cands: n.values, quotedValue: false }
    case 'str': return { t: 'str', n, started: false, seg: 0, count: 0, esc: false }
    case 'num': return { t: 'num', n, s: '' }
    case 'scalar': return { t: 'scalar', n }
    case 'obj': return { t: 'obj', n, pos: 'start', next: 0, cur: -1, typed: '', cap: {} }
    case 'arr': return { t: 'arr', n, pos: 'start', count: 0 }
    case 'rec': return { t: 'rec', n, pos: 'start', count: 0, used: [], pending: '' }
  }
}

function valueOf (f: Field, cap: Readonly<Record<string, string>>): SchemaNode {
  return typeof f.value === 'function' ? f.value(cap) : f.value
}

/** the keys that may come next: optional ones up to and including the next required one */
function keyCands (fields: readonly Field[], from: number): number[] {
  const out: number[] = []
  for (let j = from; j < fields.length; j++) {
    out.push(j)
    if (fields[j].required) break
  }
  return out
}
function firstRequired (fields: readonly Field[], from: number): number {
  for (let j = from; j < fields.length; j++) if (fields[j].required) return j
  return -1
}

function recKeyInit (s: RecS): State {
  const k = s.n.keys
  if (Array.isArray(k)) return { t: 'enum', typed: '', cands: (k as string[]).filter(q => !s.used.includes(q)), quotedValue: true }
  return init(k as StrNode)
}
function recKeysLeft (s: RecS): boolean {
  return !Array.isArray(s.n.keys) || (s.n.keys as string[]).some(q => !s.used.includes(q))
}

// ---- numbers: non-negative, no exponent, at most `frac` fraction digits; exact range checks on scaled integers

function numParts (n: NumNode, s: string): { I: string, f: string, dot: boolean } | undefined {
  const m = /^(0|[1-9][0-9]*)(\.([0-9]*))?$/.exec(s)
  if (m == null) return undefined
  const I = m[1]
  const f = m[3] ?? ''
  if (I.length > n.intDigits || f.length > n.frac || (m[2] != null && n.frac === 0)) return undefined
  return { I, f, dot: m[2] != null }
}
function numBounds (n: NumNode): [number, number] {
  const F = 10 ** n.frac
  return [Math.ceil(n.min * F - 1e-6), Math.floor(n.max * F + 1e-6)]
}
function numViable (n: NumNode, s: string): boolean {
  const [lo, hi] = numBounds(n)
  if (lo > hi) return false
  if (s === '') return true
  const p = numParts(n, s)
  if (p == null) return false
  const F = 10 ** n.frac
  if (p.dot) {
    const v = Number(p.I) * F + Number((p.f + '0'.repeat(n.frac)).slice(0, n.frac) || '0')
    const top = v + 10 ** (n.frac - p.f.length) - 1
    return v <= hi && top >= lo
  }
  const I = Number(p.I)
  const maxExtra = p.I === '0' ? 0 : n.intDigits - p.I.length
  for (let j = 0; j <= maxExtra; j++) {
    const a = I * 10 ** j * F
    const b = ((I * 10 ** j) + 10 ** j - 1) * F + (F - 1)
    if (a <= hi && b >= lo) return true
  }
  return false
}
function numComplete (n: NumNode, s: string): boolean {
  const p = numParts(n, s)
  if (p == null || s.endsWith('.')) return false
  const F = 10 ** n.frac
  const v = Number(p.I) * F + Number((p.f + '0'.repeat(n.frac)).slice(0, n.frac) || '0')
  const [lo, hi] = numBounds(n)
  return v >= lo && v <= hi
}
function numCompletion (n: NumNode, s: string): string {
  if (numComplete(n, s)) return ''
  const chars = '0123456789.'
  const maxDepth = n.intDigits + n.frac + 2
  const dfs = (cur: string, depth: number): string | undefined => {
    if (depth === 0) return numComplete(n, cur) ? '' : undefined
    for (const c of chars) {
      const nx = cur + c
      if (!numViable(n, nx)) continue
      const r = dfs(nx, depth - 1)
      if (r != null) return c + r
    }
    return undefined
  }
  for (let d = 1; d <= maxDepth; d++) {
    const r = dfs(s, d)
    if (r != null) return r
  }
  throw new SchemaError(`number ${n.min}…${n.max} cannot be completed from "${s}"`)
}

// ---- strings

function strCanClose (s: StrS): boolean {
  const segs = s.n.segs
  for (let i = s.seg; i < segs.length; i++) {
    const g = segs[i]
    if ('lit' in g) return false
    if ((i === s.seg ? s.count : 0) < g.min) return false
  }
  return true
}

function feed (s: State, ch: string): R {
  switch (s.t) {
    case 'enum':
    case 'raw': {
      const typed = s.typed + ch
      const cands = s.cands.filter(q => q.startsWith(typed))
      if (cands.length === 0) return null
      if (cands.includes(typed)) return { done: true, consumed: true, value: s.quotedValue ? JSON.parse(typed) : typed }
      return { ...s, typed, cands }
    }
    case 'str': {
      if (!s.started) return ch === '"' ? { ...s, started: true } : null
      const segs = s.n.segs
      if (s.esc) return ESCAPES.includes(ch) && ch.length === 1 ? { ...s, esc: false, count: s.count + 1 } : null
      if (ch === '"') return strCanClose(s) ? DONE : null
      if (ch === '\\') {
        const g = segs[s.seg]
        if (g == null || 'lit' in g || g.cls.escapes !== true || s.count + 1 > g.max) return null
        return { ...s, esc: true }
      }
      let seg = s.seg
      let count = s.count
      while (seg < segs.length) {
        const g = segs[seg]
        if ('lit' in g) {
          if (g.lit[count] !== ch) return null
          count++
          if (count === g.lit.length) { seg++; count = 0 }
          return { ...s, seg, count }
        }
        if (count + ch.length <= g.max && g.cls.test(ch)) return { ...s, seg, count: count + ch.length }
        if (count < g.min) return null
        seg++
        count = 0
      }
      return null
    }
    case 'num': {
      const numChar = (ch >= '0' && ch <= '9') || ch === '.'
      if (numChar) {
        const ns = s.s + ch
        return numViable(s.n, ns) ? { ...s, s: ns } : null
      }
      return numComplete(s.n, s.s) ? { done: true, consumed: false } : null
    }
    case 'scalar': {
      const n = s.n
      const next = ch === '"' ? init(n.str) : (ch >= '0' && ch <= '9') ? init(n.num) : init(n.raw)
      return feed(next, ch)
    }
    case 'obj': {
      const f = s.n.fields
      switch (s.pos) {
        case 'start': return ch === '{' ? { ...s, pos: 'open' } : null
        case 'open':
        case 'key': {
          if (s.pos === 'open' && ch === '}') return firstRequired(f, s.next) < 0 ? DONE : null
          const typed = s.typed + ch
          const cands = keyCands(f, s.next).filter(j => f[j].quoted.startsWith(typed))
          if (cands.length === 0) return null
          const exact = cands.find(j => f[j].quoted === typed)
          if (exact != null) return { ...s, pos: 'colon', cur: exact, typed: '' }
          return { ...s, pos: 'key', typed }
        }
        case 'colon': return ch === ':' ? { ...s, pos: 'value', child: init(valueOf(f[s.cur], s.cap)) } : null
        case 'value': {
          const r = feed(s.child as State, ch)
          if (r == null) return null
          if (!isDone(r)) return { ...s, child: r }
          const cap = r.value !== undefined ? { ...s.cap, [f[s.cur].key]: r.value } : s.cap
          const after: ObjS = { ...s, pos: 'after', child: undefined, cap }
          return r.consumed ? after : feed(after, ch)
        }
        case 'after':
          if (ch === ',') return s.cur + 1 < f.length ? { ...s, pos: 'key', next: s.cur + 1, typed: '' } : null
          if (ch === '}') return firstRequired(f, s.cur + 1) < 0 ? DONE : null
          return null
      }
      return null
    }
    case 'arr': {
      const n = s.n
      switch (s.pos) {
        case 'start': return ch === '[' ? { ...s, pos: 'first' } : null
        case 'first': {
          if (ch === ']') return n.min === 0 ? DONE : null
          if (n.max === 0) return null
          return feed({ ...s, pos: 'item', child: init(n.item) }, ch)
        }
        case 'item': {
          const r = feed(s.child as State, ch)
          if (r == null) return null
          if (!isDone(r)) return { ...s, child: r }
          const after: ArrS = { ...s, pos: 'after', count: s.count + 1, child: undefined }
          return r.consumed ? after : feed(after, ch)
        }
        case 'after':
          if (ch === ',') return s.count < n.max ? { ...s, pos: 'item', child: init(n.item) } : null
          if (ch === ']') return s.count >= n.min ? DONE : null
          return null
      }
      return null
    }
    case 'rec': {
      const n = s.n
      switch (s.pos) {
        case 'start': return ch === '{' ? { ...s, pos: 'open' } : null
        case 'open': {
          if (ch === '}') return n.min === 0 ? DONE : null
          if (!recKeysLeft(s)) return null
          return feed({ ...s, pos: 'key', child: recKeyInit(s) }, ch)
        }
        case 'key': {
          const r = feed(s.child as State, ch)
          if (r == null) return null
          if (!isDone(r)) return { ...s, child: r }
          return { ...s, pos: 'colon', child: undefined, pending: r.value !== undefined ? JSON.stringify(r.value) : '' }
        }
        case 'colon': return ch === ':' ? { ...s, pos: 'value', child: init(n.value) } : null
        case 'value': {
          const r = feed(s.child as State, ch)
          if (r == null) return null
          if (!isDone(r)) return { ...s, child: r }
          const after: RecS = { ...s, pos: 'after', count: s.count + 1, child: undefined, used: s.pending !== '' ? [...s.used, s.pending] : s.used, pending: '' }
          return r.consumed ? after : feed(after, ch)
        }
        case 'after':
          if (ch === ',') return s.count < n.max && recKeysLeft(s) ? { ...s, pos: 'key', child: recKeyInit(s) } : null
          if (ch === '}') return s.count >= n.min ? DONE : null
          return null
      }
      return null
    }
  }
}

// ------------------------------------------------------------------ completions

const minimalCache = new WeakMap<SchemaNode, string>()

/** a shortest valid rendering of a node (cached) */
export function minimal (n: SchemaNode): string {
  let m = minimalCache.get(n)
  if (m == null) {
    m = completion(init(n))
    minimalCache.set(n, m)
  }
  return m
}

const shortest = (xs: string[]): string => xs.reduce((a, b) => (b.length < a.length ? b : a))

/** the object's rest from field `from` on: the required fields with minimal values, then `}` */
function objRest (n: ObjNode, from: number, cap: Readonly<Record<string, string>>, first: boolean): string {
  const j = firstRequired(n.fields, from)
  if (j < 0) return '}'
  return (first ? '' : ',') + n.fields[j].quoted + ':' + objValueAndRest(n, j, cap)
}
function objValueAndRest (n: ObjNode, j: number, cap: Readonly<Record<string, string>>): string {
  const v = valueOf(n.fields[j], cap)
  if (v.t === 'enum' && n.dependent) {
    return shortest(v.values.map((x, i) => v.quoted[i] + objRest(n, j + 1, { ...cap, [n.fields[j].key]: x }, false)))
  }
  return minimal(v) + objRest(n, j + 1, cap, false)
}

function recEntries (s: RecS, from: number, used: readonly string[]): string {
  const n = s.n
  let out = ''
  const need = Math.max(0, n.min - from)
  const keys = Array.isArray(n.keys) ? (n.keys as string[]).filter(q => !used.includes(q)).sort((a, b) => a.length - b.length) : []
  for (let i = 0; i < need; i++) {
    const key = Array.isArray(n.keys) ? keys[i] : minimal(n.keys as StrNode)
    out += (from + i > 0 ? ',' : '') + key + ':' + minimal(n.value)
  }
  return out + '}'
}

function completion (s: State): string {
  switch (s.t) {
    case 'enum':
    case 'raw': return shortest(s.cands.map(q => q.slice(s.typed.length)))
    case 'str': {
      let out = s.started ? '' : '"'
      let count = s.count
      if (s.esc) { out += '/'; count++ }
      const segs = s.n.segs
      for (let i = s.seg; i < segs.length; i++) {
        const g = segs[i]
        const c = i === s.seg ? count : 0
        if ('lit' in g) out += g.lit.slice(c)
        else out += g.cls.filler.repeat(Math.max(0, g.min - c))
      }
      return out + '"'
    }
    case 'num': return numCompletion(s.n, s.s)
    case 'scalar': return shortest([minimal(s.n.num), minimal(s.n.raw), minimal(s.n.str)])
    case 'obj': {
      const n = s.n
      const f = n.fields
      switch (s.pos) {
        case 'start': return '{' + objRest(n, 0, s.cap, true)
        case 'open': return objRest(n, s.next, s.cap, true)
        case 'key': return shortest(keyCands(f, s.next).filter(j => f[j].quoted.startsWith(s.typed)).map(j => f[j].quoted.slice(s.typed.length) + ':' + objValueAndRest(n, j, s.cap)))
        case 'colon': return ':' + objValueAndRest(n, s.cur, s.cap)
        case 'value': {
          const c = s.child as State
          if (c.t === 'enum' && n.dependent) {
            return shortest(c.cands.map(q => q.slice(c.typed.length) + objRest(n, s.cur + 1, { ...s.cap, [f[s.cur].key]: JSON.parse(q) }, false)))
          }
          return completion(c) + objRest(n, s.cur + 1, s.cap, false)
        }
        case 'after': return objRest(n, s.cur + 1, s.cap, false)
      }
      return ''
    }
    case 'arr': {
      const n = s.n
      const tail = (c: number): string => (',' + minimal(n.item)).repeat(Math.max(0, n.min - c)) + ']'
      switch (s.pos) {
        case 'start': return '[' + (n.min === 0 ? ']' : minimal(n.item) + tail(1))
        case 'first': return n.min === 0 ? ']' : minimal(n.item) + tail(1)
        case 'item': return completion(s.child as State) + tail(s.count + 1)
        case 'after': return tail(s.count)
      }
      return ''
    }
    case 'rec': {
      const n = s.n
      const valueRest = (key: string): string => ':' + minimal(n.value) + recEntries(s, s.count + 1, key !== '' ? [...s.used, key] : s.used)
      switch (s.pos) {
        case 'start': return '{' + recEntries(s, 0, s.used)
        case 'open': return recEntries(s, 0, s.used)
        case 'key': {
          const c = s.child as State
          if (c.t === 'enum') return shortest(c.cands.map(q => q.slice(c.typed.length) + valueRest(q)))
          return completion(c) + valueRest('')
        }
        case 'colon': return valueRest(s.pending)
        case 'value': return completion(s.child as State) + recEntries(s, s.count + 1, s.pending !== '' ? [...s.used, s.pending] : s.used)
        case 'after': return recEntries(s, s.count, s.used)
      }
      return ''
    }
  }
}

// ------------------------------------------------------------------ the validator API

export function startState (schema: SchemaNode): RootState {
  return { child: init(schema), done: false }
}

/** the state after `text`, or null when `text` leaves the grammar */
export function advance (state: RootState, text: string): RootState | null {
  if (text.length === 0) return null
  let st: RootState = state
  for (const ch of text) {
    if (st.done) return null
    const r = feed(st.child, ch)
    if (r == null) return null
    if (isDone(r)) {
      if (!r.consumed) return null
      st = { child: st.child, done: true }
    } else {
      st = { child: r, done: false }
    }
  }
  return st
}

/** a short text that completes the document from `state` ('' when complete) */
export function completeFrom (state: RootState): string {
  return state.done ? '' : completion(state.child)
}

/** whether `text` is a complete document of the schema */
export function matches (schema: SchemaNode, text: string): boolean {
  const s = advance(startState(schema), text)
  return s != null && s.done
}

/** whether `text` is a prefix of some document of the schema */
export function isPrefix (schema: SchemaNode, text: string): boolean {
  return text.length === 0 || advance(startState(schema), text) != null
}
