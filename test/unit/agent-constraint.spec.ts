/* The agent's JSON constraint: the grammar engine, the task schema against the action catalogue, and the constrain hook driven by random aggregated distributions over a synthetic vocabulary (fast-check). */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import type { Aggregated } from '../../src/aggregate/types.js'
import { ACTIONS, classifyAction } from '../../src/governance/tiers.js'
import {
  SchemaError, advance, arr, completeFrom, enumOf, field, int, isPrefix, matches, minimal, num, obj, pattern, rec, scalar, startState, text,
  DIGIT, type SchemaNode
} from '../../src/agent/json-constraint.js'
import { JsonConstraint, buildPieceTable, type PieceTable } from '../../src/agent/json-constraint-tokens.js'
import { ACTION_TYPES, DOMAINS, PARAM_SPECS, checkTaskShape, paramsSchema, taskSchema, type TaskSchemaOptions } from '../../src/agent/task-schema.js'
import { runs } from '../helpers/fuzz.js'

const PEERS = ['12D3KooWGzh9sUHbWm8RLYL5rRUVaYJYLtWxWzRrZ1PmJ3eYWqBZ', '12D3KooWPmFhfaVvJ3PmaioQL7WF3j6jyBbF78EYEGSmZb4amHeo', 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N']

/** a small vocabulary like a BPE one: every printable ASCII character, JSON and schema pieces, words, junk, specials */
function syntheticPieces (): { texts: Array<string | undefined>, eos: number, special: number } {
  const texts: Array<string | undefined> = []
  for (let c = 32; c < 127; c++) texts.push(String.fromCharCode(c))
  texts.push('{"', '":"', '","', '":', '"}', '}]', '}]}', '"},{"', '":{"', '":["', '"],"', '[]', '{}', ',"', '":[', '"]', ' "', '"\n')
  for (const k of ['domain', 'title', 'rationale', 'evidence', 'actions', 'type', 'params', 'expert', 'reason', 'weights', 'key', 'value', 'body', 'summary', 'protocol', 'version', 'sha256', 'model', 'durationHours', 'suite', 'rule', 'k']) texts.push(k, `"${k}"`, `"${k}":`)
  for (const d of DOMAINS) texts.push(d)
  for (const t of ACTION_TYPES) texts.push(t, ...t.split('_'))
  texts.push(' the', ' expert', ' is', ' failing', ' slow', ' mesh', 'ing', ' 1000', ' bytes', '12D3', 'KooW', 'Qm', '/meshllm/', 'infer', '1.0.0', 'true', 'false', 'mixture', 'product', '0.5', '00', 'ab', 'ff')
  texts.push('é', '日本', '\\', '\\n', '\\"', '\n', '\t', '\uFFFD', '', 'a\u0001')
  const special = texts.length
  texts.push('') // a special token: never generated
  const eos = texts.length
  texts.push('')
  return { texts, eos, special }
}
const SYN = syntheticPieces()
const TABLE: PieceTable = buildPieceTable(SYN.texts, SYN.eos, id => id === SYN.special)
const V = SYN.texts.length

/** a tiny deterministic PRNG for sampling inside a property */
function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296 }
}

function randomAgg (r: () => number): Aggregated {
  const n = Math.floor(r() * 48)
  const ids = new Set<number>()
  while (ids.size < n) ids.add(Math.floor(r() * V))
  const list = [...ids]
  const w = list.map(() => r() ** 3)
  const total = w.reduce((a, b) => a + b, 0) || 1
  const order = list.map((_, i) => i).sort((a, b) => w[b] - w[a])
  return { ids: Uint32Array.from(order.map(i => list[i])), probs: Float64Array.from(order.map(i => w[i] / total)), restProb: 0, restCount: 0 }
}

function sampleFrom (agg: Aggregated, r: () => number, temperature: number): number {
  if (temperature === 0) return agg.ids[0]
  let u = r()
  for (let i = 0; i < agg.ids.length; i++) { if (u < agg.probs[i]) return agg.ids[i]; u -= agg.probs[i] }
  return agg.ids[agg.ids.length - 1]
}

/** drives one constrained generation like the router does; returns the text and how it ended */
function generate (schema: SchemaNode, maxTokens: number, seed: number, temperature: number, aggFor: (r: () => number, step: number) => Aggregated = randomAgg): { text: string, tokens: number, ended: 'eos' | 'length', constraint: JsonConstraint } {
  const c = new JsonConstraint(schema, TABLE, maxTokens)
  const r = rng(seed)
  const gen: number[] = []
  while (gen.length < maxTokens) {
    const out = c.constrain(aggFor(r, gen.length), gen)
    assert.equal(out.restCount, 0)
    assert.ok(out.ids.length > 0)
    const sum = out.probs.reduce((a, b) => a + b, 0)
    assert.ok(Math.abs(sum - 1) < 1e-9, `probabilities sum to ${sum}`)
    for (let i = 1; i < out.probs.length; i++) assert.ok(out.probs[i - 1] >= out.probs[i], 'sorted by probability')
    const tok = sampleFrom(out, r, temperature)
    if (tok === SYN.eos) return { text: c.text, tokens: gen.length, ended: 'eos', constraint: c }
    gen.push(tok)
  }
  // the hook never saw the token sampled at the last step
  c.follow(gen)
  return { text: c.text, tokens: gen.length, ended: 'length', constraint: c }
}

const schemaOptions = fc.record({
  domains: fc.subarray([...DOMAINS], { minLength: 1 }),
  actionTypes: fc.subarray(ACTION_TYPES, { minLength: 1 }),
  experts: fc.option(fc.subarray(PEERS, { minLength: 1 }), { nil: undefined }),
  configKeys: fc.option(fc.constantFrom(['router.k'], ['router.k', 'frame.topK']), { nil: undefined }),
  limits: fc.record({ title: fc.integer({ min: 1, max: 60 }), evidenceItems: fc.integer({ min: 0, max: 3 }), actions: fc.integer({ min: 1, max: 3 }), reason: fc.integer({ min: 1, max: 40 }) })
}, { requiredKeys: ['domains', 'actionTypes', 'limits'] })

describe('agent: JSON constraint', () => {
  it('mirrors the action catalogue exactly (types, required and optional parameters)', () => {
    assert.deepEqual(Object.keys(PARAM_SPECS).sort(), Object.keys(ACTIONS).sort())
    for (const [type, spec] of Object.entries(ACTIONS)) {
      assert.deepEqual(Object.keys(PARAM_SPECS[type].required), Object.keys(spec.required), `${type} required`)
      assert.deepEqual(Object.keys(PARAM_SPECS[type].optional).sort(), Object.keys(spec.optional ?? {}).sort(), `${type} optional`)
      // the shortest params document of every type passes the catalogue's own checks
      assert.equal(classifyAction({ type, params: JSON.parse(minimal(paramsSchema(type))) }).known, true, type)
    }
  })

  it('accepts exactly the schema documents (hand-written cases)', () => {
    const s = taskSchema({ domains: ['security'], actionTypes: ['report', 'flag_expert'], experts: [PEERS[0]] })
    const good = `{"domain":"security","title":"t","rationale":"r","evidence":["a \\"quoted\\" 5"],"actions":[{"type":"flag_expert","params":{"expert":"${PEERS[0]}","reason":"x"}},{"type":"report","params":{"title":"y","body":""}}]}`
    assert.equal(matches(s, good), true)
    JSON.parse(good)
    for (const bad of [
      good.replace('"security"', '"storage"'), // domain not allowed
      good.replace(PEERS[0], PEERS[1]), // expert not in the finding
      good.replace('"title":"t"', '"title":""'), // empty title
      good.replace('"flag_expert"', '"ban_expert"'), // type not allowed
      good.replace(',"reason":"x"', ''), // required parameter missing
      good.replace('{"domain"', '{ "domain"'), // whitespace outside strings
      good.replace('"rationale":"r"', '"rationale":"r\n"'), // raw control character
      good + ' '
    ]) assert.equal(matches(s, bad), false, bad)
    assert.equal(isPrefix(s, '{"domain":"sec'), true)
    assert.equal(isPrefix(s, '{"domain":"x'), false)
  })

  it('bounds numbers exactly and completes them', () => {
    const n = obj([field('k', int(1, 64)), field('w', num(0, 1, 3)), field('h', num(0, 8760, 3), false)])
    assert.equal(matches(n, '{"k":64,"w":1}'), true)
    assert.equal(matches(n, '{"k":64,"w":0.125,"h":8760.0}'), true)
    for (const bad of ['{"k":65,"w":1}', '{"k":0,"w":1}', '{"k":01,"w":1}', '{"k":1,"w":1.001}', '{"k":1,"w":0.1234}', '{"k":1.5,"w":1}', '{"k":1,"w":1.}', '{"k":1,"w":-0}']) assert.equal(matches(n, bad), false, bad)
    // any viable prefix completes to a document
    for (const p of ['{"k":6', '{"k":1,"w":0.', '{"k":1,"w":1', '{"k":1,"w":1.0', '{"k":1,"w":0,"h":876']) {
      const st = advance(startState(n), p)
      assert.ok(st != null, p)
      assert.equal(matches(n, p + completeFrom(st)), true, p + completeFrom(st))
    }
  })

  it('patterns: protocol, semver, sha256, records without duplicate keys, scalars', () => {
    const a = paramsSchema('update_protocol')
    assert.equal(matches(a, '{"protocol":"/meshllm/infer/1.0.0","version":"1.22.333"}'), true)
    assert.equal(matches(a, '{"protocol":"/mesh/x","version":"1.2.3"}'), false)
    assert.equal(matches(a, '{"protocol":"/meshllm/x","version":"1.2"}'), false)
    const w = paramsSchema('set_selection_weights', { experts: PEERS.slice(0, 2) })
    assert.equal(matches(w, `{"weights":{"${PEERS[1]}":0.5,"${PEERS[0]}":1}}`), true)
    assert.equal(matches(w, `{"weights":{"${PEERS[1]}":0.5,"${PEERS[1]}":1}}`), false)
    const sc = obj([field('v', scalar(text(0, 4), num(0, 10, 1)))])
    for (const v of ['"ab"', '""', '7.5', 'true', 'false']) assert.equal(matches(sc, `{"v":${v}}`), true, v)
    assert.equal(matches(sc, '{"v":tru}'), false)
    const r = rec(pattern({ cls: DIGIT, min: 1, max: 2 }), enumOf(['x']), 1, 2)
    assert.equal(matches(r, '{"1":"x","22":"x"}'), true)
    assert.equal(matches(r, '{}'), false)
    assert.throws(() => enumOf([]), SchemaError)
    assert.throws(() => new JsonConstraint(taskSchema(), TABLE, 10), /more than maxTokens/)
  })

  it('property: from any reachable state, the completion finishes a valid document', () => {
    fc.assert(fc.property(schemaOptions, fc.integer({ min: 0, max: 2 ** 31 }), (o, seed) => {
      const schema = taskSchema(o as TaskSchemaOptions)
      const r = rng(seed)
      let st = startState(schema)
      let prefix = ''
      for (let i = 0; i < 200 && !st.done; i++) {
        // a random valid character (or the completion's next one)
        const c = completeFrom(st)
        assert.equal(matches(schema, prefix + c), true, `${prefix} + ${c}`)
        const tries = [...'"{}[],:.aZ09 -_/\\nté', String.fromCharCode(32 + Math.floor(r() * 95))].sort(() => r() - 0.5)
        let moved = false
        for (const ch of tries) {
          const nx = advance(st, ch)
          if (nx != null && r() < 0.7) { st = nx; prefix += ch; moved = true; break }
        }
        if (!moved) { st = advance(st, c[0]) as any; prefix += c[0] }
      }
    }), { numRuns: runs(60) })
  })

  it('property: random aggregated candidates always give a complete, parseable, schema-valid task within maxTokens', () => {
    fc.assert(fc.property(schemaOptions, fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 0, max: 400 }), fc.constantFrom(0, 0.7, 1.5), (o, seed, extra, temperature) => {
      const opts = o as TaskSchemaOptions
      const schema = taskSchema(opts)
      const maxTokens = minimal(schema).length + extra
      const g = generate(schema, maxTokens, seed, temperature)
      assert.ok(g.tokens <= maxTokens)
      assert.equal(matches(schema, g.text), true, g.text)
      const task = checkTaskShape(JSON.parse(g.text))
      assert.ok(opts.domains!.includes(task.domain))
      assert.ok(task.title.length >= 1 && task.title.length <= (opts.limits?.title ?? 80))
      assert.ok(task.evidence.length <= (opts.limits?.evidenceItems ?? 3))
      assert.ok(task.actions.length >= 1 && task.actions.length <= (opts.limits?.actions ?? 2))
      for (const a of task.actions) {
        assert.ok(opts.actionTypes!.includes(a.type), a.type)
        const c = classifyAction(a)
        assert.equal(c.known, true, `${JSON.stringify(a)}: ${c.reason}`)
        assert.equal(c.tier, ACTIONS[a.type].tier)
        if (opts.experts != null && 'expert' in a.params) assert.ok(opts.experts.includes(a.params.expert as string))
      }
      // once complete, only EOS
      if (g.ended === 'eos') assert.equal(g.constraint.complete, true)
      else assert.equal(g.constraint.complete, true, 'complete exactly at maxTokens')
    }), { numRuns: runs(150) })
  })

  it('a generation that ends exactly at maxTokens: the hook never saw the last token; follow() completes the document (CI counterexample)', () => {
    const schema = taskSchema({ domains: ['scheduler'], actionTypes: ['adjust_k', 'change_governance'], limits: { title: 14, evidenceItems: 2, actions: 1, reason: 1 } })
    const maxTokens = minimal(schema).length + 1
    const c = new JsonConstraint(schema, TABLE, maxTokens)
    const r = rng(1129616820)
    const gen: number[] = []
    while (gen.length < maxTokens) {
      const tok = sampleFrom(c.constrain(randomAgg(r), gen), r, 0.7)
      if (tok === SYN.eos) break
      gen.push(tok)
    }
    assert.equal(gen.length, maxTokens, 'this seed uses the whole budget')
    assert.equal(c.complete, false, 'one token behind')
    assert.equal(c.follow(gen).complete, true)
    assert.equal(matches(schema, c.text), true)
    assert.equal(c.text, gen.map(t => SYN.texts[t]).join(''))
  })

  it('forces the grammar when no listed token fits (empty or hostile candidates)', () => {
    const schema = taskSchema({ domains: ['network'], actionTypes: ['flag_expert'], experts: [PEERS[2]] })
    const junk = [SYN.special, SYN.eos, SYN.texts.indexOf('\n'), SYN.texts.indexOf('\uFFFD'), SYN.texts.indexOf('a\u0001')]
    const hostile = (): Aggregated => ({ ids: Uint32Array.from(junk), probs: Float64Array.from(junk.map(() => 1 / junk.length)), restProb: 0, restCount: 0 })
    const empty = (): Aggregated => ({ ids: new Uint32Array(0), probs: new Float64Array(0), restProb: 0, restCount: 0 })
    for (const aggFor of [hostile, empty]) {
      const g = generate(schema, 400, 1, 0, aggFor)
      assert.equal(g.ended, 'eos')
      assert.equal(g.text, minimal(schema))
      assert.equal(g.constraint.stats.forced, g.tokens, 'every step forced')
      assert.ok(g.tokens < g.text.length, 'multi-character tokens are used when forcing')
      const t = JSON.parse(g.text)
      assert.deepEqual(t.actions[0].params.expert, PEERS[2])
    }
  })

  it('follows the generated tokens it is given (replay when a different generation is passed)', () => {
    const schema = taskSchema({ domains: ['network'], actionTypes: ['report'] })
    const c = new JsonConstraint(schema, TABLE, 200)
    const id = (s: string): number => TABLE.lookup.get(s) as number
    const agg = (ids: number[]): Aggregated => ({ ids: Uint32Array.from(ids), probs: Float64Array.from(ids.map(() => 1 / ids.length)), restProb: 0, restCount: 0 })
    const out = c.constrain(agg([id('{"'), id('x')]), [])
    assert.deepEqual([...out.ids], [id('{"')])
    c.constrain(agg([id('domain')]), [id('{"')])
    assert.equal(c.text, '{"')
    c.constrain(agg([id('x')]), [id('{"'), id('domain')])
    assert.equal(c.text, '{"domain')
    // a different history: replayed from scratch
    c.constrain(agg([id('x')]), [id('{')])
    assert.equal(c.text, '{')
    assert.throws(() => c.constrain(agg([id('x')]), [id('x')]), /leaves the grammar/)
  })

  it('arrays and optional fields: bounds and minimal documents', () => {
    const s = obj([field('a', arr(enumOf(['x', 'yy']), 2, 3)), field('o', text(1, 3), false), field('z', int(0, 9))])
    assert.equal(minimal(s), '{"a":["x","x"],"z":0}')
    assert.equal(matches(s, '{"a":["x","yy","x"],"o":"abc","z":9}'), true)
    assert.equal(matches(s, '{"a":["x"],"z":1}'), false)
    assert.equal(matches(s, '{"a":["x","x","x","x"],"z":1}'), false)
    assert.equal(matches(s, '{"a":["x","x"],"o":"abcd","z":1}'), false)
    assert.equal(matches(s, '{"a":["x","x"],"z":1,"o":"a"}'), false, 'fixed key order')
  })
})
