/**
 * meshllm CLI: registers one yargs command module per command (src/cli/commands/*) and maps
 * every error to one line on stderr and an exit code (EXIT, exitCodeFor: src/cli/errors.ts).
 *
 * Only the option declarations are loaded here: each command imports libp2p, node-llama-cpp
 * or grpc inside its handler, so `meshllm --help` and `meshllm halt --help` pay only for
 * yargs.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Argv } from 'yargs'
import type YargsFactory from 'yargs'
import { EXIT, UsageError, exitCodeFor } from './errors.js'
import { PARSER_CONFIGURATION, type Command } from './args.js'
import { suppressSqliteExperimentalWarning } from './warnings.js'
import { defaultBootstrap } from './bootstrap.js'
import { join } from './commands/join.js'
import { generate } from './commands/generate.js'
import { status } from './commands/status.js'
import { demo } from './commands/demo.js'
import { agent } from './commands/agent.js'
import { tasks } from './commands/tasks.js'
import { evalCmd } from './commands/eval.js'
import { keys } from './commands/keys.js'
import { governance } from './commands/governance.js'
import { halt } from './commands/halt.js'
import { resume } from './commands/resume.js'
import { vote } from './commands/vote.js'
import { phase } from './commands/phase.js'
import { sign } from './commands/sign.js'
import { submit } from './commands/submit.js'
import { errorMessage, errorName } from '../util/errors.js'

export { EXIT, UsageError, exitCodeFor }

// yargs' CommonJS build: its --help wraps at word boundaries (the ESM build's cliui cuts words)
const yargs = createRequire(import.meta.url)('yargs') as typeof YargsFactory

/** every command, in the order `meshllm --help` lists them */
export const COMMANDS: readonly Command[] = [join, generate, status, demo, agent, tasks, evalCmd, keys, governance, halt, resume, vote, phase, sign, submit]

/** the commands that take --bootstrap (and so its defaults) */
const WITH_BOOTSTRAP = new Set(['join', 'generate', 'status', 'agent', 'eval', 'governance', 'halt', 'resume', 'vote', 'phase', 'submit'])

/** the first word of each command (`keys <command>` → keys) */
export const COMMAND_NAMES: readonly string[] = COMMANDS.map(c => String(c.command).split(' ')[0])

function packageVersion (): string {
  try {
    return JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')).version
  } catch {
    return 'unknown'
  }
}

/** yargs' own messages can span lines ("Invalid values:\n  Argument: …"): one line */
function oneLine (msg: string): string {
  return msg.split('\n').map(s => s.trim()).filter(s => s.length > 0).join(' ')
}

/** the parser: strict, never exits by itself, usage failures as a UsageError */
export function cli (argv: string[]): Argv {
  let y = yargs(argv)
    .scriptName('meshllm')
    .usage('$0 <command> [options]\n\nA peer-to-peer language-model mesh. `meshllm <command> --help` lists a command\'s options.')
    .parserConfiguration(PARSER_CONFIGURATION)
    .strict()
    .exitProcess(false)
    .version(packageVersion())
    .help()
    .alias('help', 'h')
    .wrap(process.stdout.isTTY ? Math.min(120, process.stdout.columns) : 100)
    .epilogue('Exit codes: 0 ok, 1 other error, 2 usage, 3 no experts, 4 incompatible tokenizer, 5 prompt longer than the context, 6 model not found, 7 no bootstrap peer reachable, 10 halted by governance, 11 keyholder message refused. MESHLLM_DEBUG=1 adds stacks to errors.')
    .demandCommand(1, 'needs a command (meshllm --help lists them)')
    .fail((msg: string | null | undefined, err: Error | undefined) => {
      // a command's own error (handler): as it is, for exitCodeFor; yargs' (parsing, validation): a UsageError
      if (err != null && errorName(err) !== 'YError') throw err
      throw new UsageError(oneLine(msg ?? err?.message ?? 'usage error'))
    })
  // --bootstrap, when not given: MESHLLM_BOOTSTRAP, else the config file (src/cli/bootstrap.ts)
  y = y.middleware((argv) => {
    if (argv.bootstrap != null || argv.via != null || !WITH_BOOTSTRAP.has(String(argv._[0]))) return
    const d = defaultBootstrap()
    if (d.addrs.length > 0) argv.bootstrap = d.addrs
  })
  for (const c of COMMANDS) y = y.command(c)
  return y
}

/** Parses `argv` and runs the command; throws what the command throws (help and --version print and return). */
export async function run (argv: string[]): Promise<void> {
  const [first, ...rest] = argv
  // `meshllm help [command]` = `meshllm [command] --help`
  if (first === 'help') return await run([...rest, '--help'])
  if (first != null && !first.startsWith('-') && !COMMAND_NAMES.includes(first)) throw new UsageError(`unknown command "${first.slice(0, 64)}" (meshllm --help lists the commands)`)
  await cli(argv).parseAsync()
}

export async function main (argv: string[]): Promise<void> {
  // node:sqlite (agent, tasks, join's APIs) would print an ExperimentalWarning: only that one is dropped
  suppressSqliteExperimentalWarning()
  // Deadlines here are AbortSignal.timeout()s, whose timers do not keep the event loop
  // alive: should every socket close while a promise still waits on one of them (a
  // connection closing during node.stop(), say), Node would exit with code 13 ("unsettled
  // top-level await") instead of letting the deadline fire. Every command ends in
  // process.exit, so this timer never delays an exit.
  setInterval(() => {}, 3_600_000)
  // warnings Node has queued (emitted on the next tick) are printed before the exit, not lost
  const flush = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }
  try {
    await run(argv)
    await flush()
    process.exit(EXIT.OK)
  } catch (err) {
    process.stderr.write(`meshllm: ${oneLine(errorMessage(err))}\n`)
    if (process.env.MESHLLM_DEBUG != null) process.stderr.write(`${(err as Error | undefined)?.stack}\n`)
    await flush()
    process.exit(exitCodeFor(err))
  }
}
