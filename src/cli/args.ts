/**
 * Command-line parsing shared by every command: strict option parsing, and integer values
 * checked once: a value that is not an integer in [min, max] is a UsageError naming the
 * option (exit 2), never a NaN passed on.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from './errors.js'

/** strict parsing (unknown options and bad types are a UsageError), positionals allowed */
export function parse (args: string[], options: ParseArgsConfig['options']): { values: Record<string, any>, positionals: string[] } {
  try {
    const r = parseArgs({ args, options, allowPositionals: true, strict: true })
    return { values: r.values as Record<string, any>, positionals: r.positionals }
  } catch (err: any) {
    throw new UsageError(err.message)
  }
}

/** `--name <v>` as an integer in [min, max]; undefined when the option is absent */
export function intOption (v: string | undefined, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v == null) return undefined
  const n = Number(v)
  if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(max === Number.MAX_SAFE_INTEGER ? `--${name} must be an integer ≥ ${min}, got "${v}"` : `--${name} must be an integer in [${min}, ${max}], got "${v}"`)
  }
  return n
}
