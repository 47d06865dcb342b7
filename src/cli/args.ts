/**
 * Command-line parsing shared by every command (src/cli/commands/*): each command declares
 * its options once with the builders below, so `meshllm <command> --help` lists exactly what
 * the command accepts. Parsing is strict (unknown options and missing values are a
 * UsageError, exit 2); values stay strings and integers are checked once with `intOption`:
 * a value that is not an integer in [min, max] is a UsageError naming the option, never a
 * NaN passed on.
 *
 * This module is light on purpose (types from yargs only): `meshllm --help` loads it.
 */
import type { CommandModule, Options } from 'yargs'
import { UsageError } from './errors.js'

/** parsed option values, by option name as written on the command line (`max-tokens`) */
export type Values = Record<string, any>

/** one command, registered by src/cli/main.ts */
export type Command = CommandModule<object, Values>

/**
 * yargs-parser settings that keep the behaviour of a strict `node:util` parseArgs: numbers
 * stay strings (checked by the command, with its own message), `--no-x` is not `x = false`,
 * no dotted or camel-cased keys, a repeated option collects its values (`strs`; the others
 * keep the last one, as parseArgs did).
 */
export const PARSER_CONFIGURATION = {
  'parse-numbers': false,
  'parse-positional-numbers': false,
  'boolean-negation': false,
  'camel-case-expansion': false,
  'dot-notation': false,
  'duplicate-arguments-array': true,
  'strip-aliased': true
} as const

const last = (v: unknown): unknown => Array.isArray(v) ? v[v.length - 1] : v

/** `--name <value>`: a string (given twice: the last one) */
export function str (describe: string, extra: Partial<Options> = {}): Options {
  return { type: 'string', requiresArg: true, describe, coerce: last, ...extra }
}

/** `--name <value>`, repeatable: a string[] */
export function strs (describe: string, extra: Partial<Options> = {}): Options {
  return { type: 'string', requiresArg: true, describe: `${describe} (repeatable)`, coerce: (v: unknown) => [v].flat().map(String), ...extra }
}

/** `--name`: a boolean flag */
export function flag (describe: string, extra: Partial<Options> = {}): Options {
  return { type: 'boolean', describe, coerce: last, ...extra }
}

/**
 * An option the command cannot run without. Marked in --help and checked by the command
 * itself (not yargs' demandOption, whose "missing" error would hide an unknown option: a
 * typo such as --bootsrap is reported as what it is).
 */
export function required (o: Options): Options {
  return { ...o, describe: `${o.describe ?? ''} [required]` }
}

/** `--name <n>`: an integer in [min, max], checked by the command with `intOption` (help states the range) */
export function int (describe: string, min: number, max = Number.MAX_SAFE_INTEGER, extra: Partial<Options> = {}): Options {
  return str(`${describe} (integer ${rangeText(min, max)})`, extra)
}

/** "≥ 1" or "in [1, 64]" */
export function rangeText (min: number, max = Number.MAX_SAFE_INTEGER): string {
  return max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`
}

/** `--name <v>` as an integer in [min, max]; undefined when the option is absent */
export function intOption (v: string | undefined, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v == null) return undefined
  const n = Number(v)
  if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer ${rangeText(min, max)}, got "${v}"`)
  }
  return n
}
