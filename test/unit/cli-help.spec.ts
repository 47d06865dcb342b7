/**
 * `meshllm <command> --help` for every command (through bin/meshllm.js, as a user runs it):
 * exit 0, every option listed with a description; a bad option is one line and exit 2;
 * --help loads no libp2p, node-llama-cpp or grpc; the defaults --help shows agree with the
 * modules that apply them.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { COMMAND_NAMES } from '../../src/cli/main.js'
import { KEYHOLDER_DEFAULTS } from '../../src/cli/defaults.js'
import { EVAL_LIST_DEFAULTS } from '../../src/cli/commands/eval.js'
import { MAX_LIFETIME_MS } from '../../src/governance/envelope.js'
import { meshllm } from '../helpers/cli.js'
import { DEFAULT_RULES, DEFAULT_TAILS, DEFAULT_WEIGHTINGS } from '../../src/eval/eval.js'
import { DEFAULT_MAX_SESSIONS_PER_PEER, DEFAULT_QUEUE_TIMEOUT_MS } from '../../src/expert/infer-service.js'
import { DEFAULT_MAX_REMOTE_K } from '../../src/router/generate-service.js'
import { GENERATE_DEFAULTS, GENERATE_LIMITS, RULES, TAILS } from '../../src/router/options.js'
import { TASK_STATES } from '../../src/tasks/model.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

/** every command (subcommands spelt out) and every option it must list */
const OPTIONS: Record<string, string[]> = {
  join: ['model', 'listen', 'announce', 'bootstrap', 'data-dir', 'threads', 'max-sessions', 'max-sessions-per-peer', 'queue-timeout', 'context-size', 'gpu', 'idle-timeout', 'governance', 'no-route', 'generate-token', 'generate-max-k', 'grpc', 'http', 'api-token-file', 'api-token', 'tls-cert', 'tls-key', 'insecure-behind-proxy'],
  generate: ['bootstrap', 'via', 'k', 'max-tokens', 'temperature', 'top-k', 'top-p', 'seed', 'stop', 'rule', 'weighting', 'tail', 'speculative', 'drafter', 'record-cache', 'tokenizer', 'governance', 'generate-token', 'json'],
  status: ['bootstrap', 'tokenizer', 'json'],
  demo: ['max-tokens', 'k', 'prompt', 'seed'],
  agent: ['once', 'interval', 'bootstrap', 'db', 'governance', 'tokenizer', 'k', 'min-experts', 'max-tokens', 'json'],
  tasks: ['db', 'state', 'limit', 'json'],
  eval: ['heldout', 'bootstrap', 'k', 'experts', 'max-tokens', 'window', 'prompt', 'rules', 'weighting', 'tails', 'weights', 'beta', 'subsets', 'robust', 'tokenizer', 'json'],
  'keys generate': ['out', 'name'],
  'governance init': ['keyholder', 'out', 'mesh-id', 'review-hours'],
  'governance show': ['governance', 'bootstrap', 'json'],
  halt: ['key', 'bootstrap', 'governance', 'reason', 'json'],
  resume: ['key', 'bootstrap', 'governance', 'lifts', 'reason', 'json'],
  vote: ['key', 'bootstrap', 'governance', 'approve', 'reject', 'json'],
  phase: ['key', 'bootstrap', 'governance', 'json'],
  sign: ['key', 'out', 'in', 'governance', 'reason', 'lifts', 'approve', 'reject', 'version', 'ttl-hours'],
  submit: ['bootstrap', 'governance', 'json']
}

/** the help line of `--name` (or `-k`): its text up to the next option */
function optionEntry (help: string, name: string): string | undefined {
  const flagRe = name.length === 1 ? `-${name}` : `--${name}`
  const lines = help.split('\n')
  const i = lines.findIndex(l => new RegExp(`^\\s+(-\\w, )?${flagRe}(\\s|$)`).test(l))
  if (i < 0) return undefined
  let entry = lines[i]
  for (let j = i + 1; j < lines.length && !/^\s+(-\w, )?--?\w/.test(lines[j]) && lines[j].trim() !== ''; j++) entry += ' ' + lines[j].trim()
  return entry
}

describe('meshllm --help, --version and every command\'s --help', function () {
  this.timeout(120_000)
  const helps = new Map<string, string>()

  before(async () => {
    // a few at a time: each is a Node process
    const cmds = Object.keys(OPTIONS)
    for (let i = 0; i < cmds.length; i += 4) {
      await Promise.all(cmds.slice(i, i + 4).map(async c => {
        const r = await meshllm([...c.split(' '), '--help'])
        assert.equal(r.code, 0, `${c} --help: ${r.stderr}`)
        assert.equal(r.stderr, '', `${c} --help writes nothing on stderr`)
        helps.set(c, r.stdout)
      }))
    }
  })

  it('the table above covers every registered command', () => {
    assert.deepEqual([...new Set(Object.keys(OPTIONS).map(c => c.split(' ')[0]))].sort(), [...COMMAND_NAMES].sort())
  })

  it('meshllm --help lists every command; meshllm help is the same; --version is package.json\'s', async () => {
    const r = await meshllm(['--help'])
    assert.equal(r.code, 0)
    for (const c of COMMAND_NAMES) assert.match(r.stdout, new RegExp(`^\\s+meshllm ${c}\\b`, 'm'), c)
    const h = await meshllm(['help'])
    assert.equal(h.code, 0)
    assert.equal(h.stdout, r.stdout)
    const v = await meshllm(['--version'])
    assert.equal(v.code, 0)
    assert.equal(v.stdout.trim(), JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')).version)
  })

  for (const [cmd, options] of Object.entries(OPTIONS)) {
    it(`meshllm ${cmd} --help lists ${options.length} options, each with a description`, () => {
      const help = helps.get(cmd) as string
      assert.match(help, new RegExp(`^meshllm ${cmd}\\b`), 'starts with its usage line')
      for (const o of options) {
        const entry = optionEntry(help, o)
        assert.ok(entry != null, `${cmd} --help lists --${o}`)
        const text = entry.replace(/^\s+(-\w, )?--?[\w-]+/, '').replace(/\[[^\]]*\]/g, '').trim()
        assert.ok(text.length >= 8, `${cmd} --${o} has a description: "${entry}"`)
      }
    })
  }

  it('choices, ranges and defaults in --help come from the modules that enforce them', () => {
    const gen = helps.get('generate') as string
    assert.ok(optionEntry(gen, 'rule')?.includes(RULES.map(r => `"${r}"`).join(', ')))
    assert.ok(optionEntry(gen, 'tail')?.includes(TAILS.map(r => `"${r}"`).join(', ')))
    assert.ok(optionEntry(gen, 'k')?.includes(`[${GENERATE_LIMITS.k[0]}, ${GENERATE_LIMITS.k[1]}]`))
    assert.ok(optionEntry(gen, 'k')?.includes(`[default: ${GENERATE_DEFAULTS.k}]`))
    assert.ok(optionEntry(gen, 'max-tokens')?.includes(`[default: ${GENERATE_DEFAULTS.maxTokens}]`))
    const join = helps.get('join') as string
    assert.ok(optionEntry(join, 'max-sessions-per-peer')?.includes(`[default: ${DEFAULT_MAX_SESSIONS_PER_PEER}]`))
    assert.ok(optionEntry(join, 'generate-max-k')?.includes(`[default: ${DEFAULT_MAX_REMOTE_K}]`))
    assert.ok(optionEntry(join, 'queue-timeout')?.includes(`[default: ${DEFAULT_QUEUE_TIMEOUT_MS}]`))
    assert.ok(optionEntry(join, 'queue-timeout')?.includes('[0, 20000]'))
    assert.ok(optionEntry(helps.get('halt') as string, 'reason')?.includes(KEYHOLDER_DEFAULTS.haltReason))
    assert.ok(optionEntry(helps.get('sign') as string, 'ttl-hours')?.includes(`[1, ${KEYHOLDER_DEFAULTS.maxTtlHours}]`))
    assert.ok(optionEntry(helps.get('tasks') as string, 'state')?.includes(TASK_STATES.map(s => `"${s}"`).join(', ')))
    // constants the light command modules repeat (importing the originals would load libp2p or node:sqlite)
    assert.equal(KEYHOLDER_DEFAULTS.maxTtlHours * 3_600_000, MAX_LIFETIME_MS)
    assert.equal(EVAL_LIST_DEFAULTS.rules, DEFAULT_RULES.join(','))
    assert.equal(EVAL_LIST_DEFAULTS.weighting, DEFAULT_WEIGHTINGS.join(','))
    assert.equal(EVAL_LIST_DEFAULTS.tails, DEFAULT_TAILS.join(','))
  })

  it('a bad option, a missing value or an unknown command is one line on stderr and exit 2', async () => {
    const cases = [
      ...Object.keys(OPTIONS).map(c => [...c.split(' '), '--no-such-option']),
      ['halt', '--key', 'k', '--bootstrap', 'b', '--no-such-option'],
      ['generate', 'x', '--bootstrap'],
      ['generate', 'x', '--rule', 'nope'],
      ['tasks', '--state', 'nope'],
      ['nope'],
      [],
      ['keys'],
      ['governance', 'nope']
    ]
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(cases.slice(i, i + 4).map(async args => {
        const r = await meshllm(args)
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
        assert.match(r.stderr, /^meshllm: \S/, args.join(' '))
        assert.equal(r.stderr.trimEnd().split('\n').length, 1, `${args.join(' ')}: one line, got ${r.stderr}`)
        assert.equal(r.stdout, '', `${args.join(' ')}: no help on stdout`)
        // the unknown option is named, not hidden behind a missing required one (vote, phase and submit first need their argument)
        if (args.includes('--no-such-option') && !['vote', 'phase', 'submit'].includes(args[0])) assert.match(r.stderr, /no-such-option/, args.join(' '))
      }))
    }
    const typo = await meshllm(['halt', '--key', 'k', '--bootsrap', '/ip4/127.0.0.1/tcp/1'])
    assert.match(typo.stderr, /^meshllm: Unknown argument: bootsrap\n$/)
  })

  it('--help loads no libp2p, node-llama-cpp or grpc (each command imports them in its handler)', async () => {
    // a resolve hook that lists every module the process loads
    const hook = `data:text/javascript,${encodeURIComponent("import { registerHooks } from 'node:module'; const seen = new Set(); registerHooks({ resolve (s, c, next) { const r = next(s, c); seen.add(r.url); return r } }); process.on('exit', () => { process.stderr.write([...seen].join('\\n') + '\\n') })")}`
    for (const args of [['--help'], ['halt', '--help'], ['join', '--help'], ['agent', '--help']]) {
      const r = await meshllm(args, {}, ['--import', hook])
      assert.equal(r.code, 0, r.stderr)
      const loaded = r.stderr.split('\n').filter(u => u.length > 0)
      assert.ok(loaded.some(u => u.includes('/yargs/')), 'the hook saw yargs')
      const heavy = loaded.filter(u => /node_modules\/(libp2p|@libp2p|node-llama-cpp|@grpc)\/|node:sqlite/.test(u))
      assert.deepEqual(heavy, [], `${args.join(' ')} loads ${heavy.slice(0, 3).join(', ')}`)
    }
  })
})
