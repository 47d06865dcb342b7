/**
 * node:sqlite (the agent's task store, used by `agent`, `tasks` and `join --http`/`--grpc`)
 * makes Node print "ExperimentalWarning: SQLite is an experimental feature…" on first use.
 * The CLI drops exactly that warning; every other warning reaches Node's own handler
 * unchanged (so `--no-warnings`, `--trace-warnings` and the usual format still apply).
 */

/** whether a warning is node:sqlite's ExperimentalWarning */
export function isSqliteExperimentalWarning (warning: string | Error, type?: string): boolean {
  const name = typeof warning === 'string' ? type : warning.name
  const message = typeof warning === 'string' ? warning : warning.message
  return name === 'ExperimentalWarning' && message.startsWith('SQLite is an experimental feature')
}

let installed = false

/** wraps process.emitWarning once so that node:sqlite's ExperimentalWarning is never emitted */
export function suppressSqliteExperimentalWarning (): void {
  if (installed) return
  installed = true
  const emit = process.emitWarning
  process.emitWarning = function (this: unknown, warning: string | Error, ...rest: any[]): void {
    // (warning, type) | (warning, type, code) | (warning, { type, code, detail })
    const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type
    if (isSqliteExperimentalWarning(warning, type)) return
    ;(emit as (...a: unknown[]) => void).call(process, warning, ...rest)
  } as typeof process.emitWarning
}
