/**
 * The schema nodes of the JSON constraint (json-constraint.ts): string enums, strings made of
 * segments, bounded numbers, true/false, objects with a fixed key order, arrays and records,
 * and the builders that check their bounds (SchemaError).
 */

export interface CharClass {
  name: string
  test: (ch: string) => boolean
  /** one character of the class, used by completions */
  filler: string
  /** the JSON escapes (\" \\ \/ \b \f \n \r \t) are allowed in this class (free text) */
  escapes?: boolean
}

export type Seg = { lit: string } | { cls: CharClass, min: number, max: number }

export interface EnumNode { t: 'enum', values: readonly string[], quoted: readonly string[] }
export interface StrNode { t: 'str', segs: readonly Seg[] }
export interface NumNode { t: 'num', min: number, max: number, frac: number, intDigits: number }
export interface RawNode { t: 'raw', values: readonly string[] }
export interface ScalarNode { t: 'scalar', str: StrNode, num: NumNode, raw: RawNode }
export interface Field {
  key: string
  quoted: string
  required: boolean
  /** a node, or a function of the values of earlier enum fields of the same object */
  value: SchemaNode | ((captured: Readonly<Record<string, string>>) => SchemaNode)
}
export interface ObjNode { t: 'obj', fields: readonly Field[], dependent: boolean }
export interface ArrNode { t: 'arr', item: SchemaNode, min: number, max: number }
export interface RecNode { t: 'rec', keys: readonly string[] | StrNode, value: SchemaNode, min: number, max: number }
export type SchemaNode = EnumNode | StrNode | NumNode | RawNode | ScalarNode | ObjNode | ArrNode | RecNode

export class SchemaError extends Error {
  static override name = 'SchemaError'
  override name = 'SchemaError'
}

const surrogate = (ch: string): boolean => { const c = ch.charCodeAt(0); return ch.length === 1 && c >= 0xd800 && c <= 0xdfff }

/** free text: any character but `"`, `\` (escapes allowed), control characters, U+FFFD and lone surrogates */
export const TEXT: CharClass = { name: 'text', test: ch => ch !== '"' && ch !== '\\' && ch.codePointAt(0)! >= 0x20 && ch !== '\uFFFD' && !surrogate(ch), filler: '.', escapes: true }
export const charClass = (name: string, re: RegExp, filler: string): CharClass => {
  if (!re.test(filler)) throw new SchemaError(`filler "${filler}" is not in class ${name}`)
  return { name, test: ch => ch.length === 1 && re.test(ch), filler }
}
export const DIGIT = charClass('digit', /^[0-9]$/, '0')
export const BASE58 = charClass('base58', /^[1-9A-HJ-NP-Za-km-z]$/, '1')
export const HEX = charClass('hex', /^[0-9a-f]$/, '0')
export const KEYCHAR = charClass('key', /^[A-Za-z0-9_.-]$/, 'x')
export const PATHCHAR = charClass('path', /^[A-Za-z0-9/_.-]$/, 'x')

export function enumOf (values: readonly string[]): EnumNode {
  if (values.length === 0) throw new SchemaError('an enum needs at least one value')
  const uniq = [...new Set(values)]
  return { t: 'enum', values: uniq, quoted: uniq.map(v => JSON.stringify(v)) }
}
export function pattern (...segs: Seg[]): StrNode {
  for (const s of segs) {
    // eslint-disable-next-line no-control-regex -- a JSON literal may not hold raw control characters
    if ('lit' in s) { if (s.lit.length === 0 || /["\\\u0000-\u001f]/.test(s.lit)) throw new SchemaError(`bad literal segment "${s.lit}"`) } else if (!(s.min >= 0 && s.max >= s.min && s.max >= 1)) throw new SchemaError(`bad segment bounds ${s.min}…${s.max}`)
  }
  return { t: 'str', segs }
}
export const text = (min: number, max: number): StrNode => pattern({ cls: TEXT, min, max })
export function num (min: number, max: number, frac = 0): NumNode {
  if (!(min >= 0 && max >= min && Number.isFinite(max))) throw new SchemaError(`number bounds must be 0 ≤ min ≤ max, got ${min}…${max}`)
  return { t: 'num', min, max, frac, intDigits: String(Math.floor(max)).length }
}
export const int = (min: number, max: number): NumNode => num(min, max, 0)
export const bool = (): RawNode => ({ t: 'raw', values: ['true', 'false'] })
export const scalar = (str: StrNode, n: NumNode): ScalarNode => ({ t: 'scalar', str, num: n, raw: bool() })
export function field (key: string, value: Field['value'], required = true): Field {
  return { key, quoted: JSON.stringify(key), required, value }
}
export function obj (fields: Field[]): ObjNode {
  if (new Set(fields.map(f => f.key)).size !== fields.length) throw new SchemaError('duplicate object key')
  return { t: 'obj', fields, dependent: fields.some(f => typeof f.value === 'function') }
}
export function arr (item: SchemaNode, min: number, max: number): ArrNode {
  if (!(min >= 0 && max >= min)) throw new SchemaError(`bad array bounds ${min}…${max}`)
  return { t: 'arr', item, min, max }
}
export function rec (keys: readonly string[] | StrNode, value: SchemaNode, min: number, max: number): RecNode {
  const k = Array.isArray(keys) ? [...new Set(keys as string[])] : keys
  if (Array.isArray(k) && k.length < min) throw new SchemaError('fewer record keys than the minimum entries')
  if (!(min >= 0 && max >= Math.max(1, min))) throw new SchemaError(`bad record bounds ${min}…${max}`)
  return { t: 'rec', keys: Array.isArray(k) ? k.map(x => JSON.stringify(x)) : k, value, min, max: Array.isArray(k) ? Math.min(max, k.length) : max }
}
