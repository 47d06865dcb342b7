/**
 * CLI behaviour without a mesh: `keys generate`'s per-user default, progress off a terminal,
 * the one warning the CLI drops, `meshllm tasks` over the node's task table, the agent's
 * --min-experts default.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultKeyFile } from '../../src/cli/governance-cli.js'
import { ProgressBar } from '../../src/cli/progress.js'
import { isSqliteExperimentalWarning } from '../../src/cli/warnings.js'
import { KEYHOLDER_DEFAULTS } from '../../src/cli/defaults.js'
import { defaultMinExperts } from '../../src/agent/cli.js'
import { GENERATE_DEFAULTS } from '../../src/router/options.js'
import { TaskStore } from '../../src/tasks/store.js'
import { assessTask } from '../../src/tasks/model.js'
import { defaultDataDir, taskDbPath } from '../../src/node/data-dir.js'
import { meshllm } from '../helpers/cli.js'

const isUsage = (err: any): boolean => err?.name === 'UsageError'

describe('CLI commands without a mesh', function () {
  this.timeout(60_000)

  describe('keys generate', () => {
    let home: string
    beforeEach(async () => { home = await mkdtemp(join(tmpdir(), 'meshllm-keys-')) })
    afterEach(async () => { await rm(home, { recursive: true, force: true }) })

    it('without --out: $MESHLLM_HOME/keys/<name>.key (mode 600, directory 700), path on stderr, never replaced', async () => {
      const file = join(home, 'keys', `${KEYHOLDER_DEFAULTS.keyName}.key`)
      const first = await meshllm(['keys', 'generate'], { MESHLLM_HOME: home })
      assert.equal(first.code, 0, first.stderr)
      assert.match(first.stdout, /^ed25519:\S+\n$/)
      assert.ok(first.stderr.includes(file), first.stderr)
      assert.equal((await stat(file)).mode & 0o777, 0o600)
      assert.equal((await stat(join(home, 'keys'))).mode & 0o777, 0o700)
      const before = await readFile(file, 'utf8')
      const second = await meshllm(['keys', 'generate'], { MESHLLM_HOME: home })
      assert.equal(second.code, 2)
      assert.equal(second.stderr.trimEnd().split('\n').length, 1)
      assert.equal(await readFile(file, 'utf8'), before, 'the existing key is untouched')
      const named = await meshllm(['keys', 'generate', '--name', 'alice'], { MESHLLM_HOME: home })
      assert.equal(named.code, 0, named.stderr)
      assert.ok((await stat(join(home, 'keys', 'alice.key'))).isFile())
    })

    it('with --out: that file, nothing on stderr; --out and --name together are a usage error', async () => {
      const out = join(home, 'k.key')
      const r = await meshllm(['keys', 'generate', '--out', out], { MESHLLM_HOME: join(home, 'unused') })
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stderr, '')
      assert.ok((await stat(out)).isFile())
      await assert.rejects(stat(join(home, 'unused')), (err: any) => err.code === 'ENOENT')
      // an existing file is never replaced, --out included (exit 2, one line, the key untouched)
      const before = await readFile(out, 'utf8')
      const again = await meshllm(['keys', 'generate', '--out', out])
      assert.equal(again.code, 2, again.stderr)
      assert.equal(again.stderr.trimEnd().split('\n').length, 1)
      assert.equal(await readFile(out, 'utf8'), before)
      const both = await meshllm(['keys', 'generate', '--out', join(home, 'x.key'), '--name', 'x'])
      assert.equal(both.code, 2)
    })

    it('the default directory follows MESHLLM_HOME, then XDG_DATA_HOME, then ~/.local/share; names cannot leave it', () => {
      assert.equal(defaultKeyFile('a', { MESHLLM_HOME: '/m' }), '/m/keys/a.key')
      assert.equal(defaultKeyFile('a', { XDG_DATA_HOME: '/x' }), '/x/meshllm/keys/a.key')
      assert.match(defaultKeyFile('a', {}), /\/\.local\/share\/meshllm\/keys\/a\.key$/)
      for (const bad of ['', '../a', 'a/b', '.hidden', '-x', 'x'.repeat(65)]) assert.throws(() => defaultKeyFile(bad, {}), isUsage, bad)
      assert.equal(defaultKeyFile('x'.repeat(64), { MESHLLM_HOME: '/m' }), `/m/keys/${'x'.repeat(64)}.key`)
    })
  })

  describe('progress', () => {
    const sink = (tty: boolean): { out: string[], stream: { isTTY: boolean, write: (s: string) => boolean } } => {
      const out: string[] = []
      return { out, stream: { isTTY: tty, write: (s: string) => { out.push(s); return true } } }
    }

    it('off a terminal: whole lines, one per 10 %, never a carriage return', () => {
      const { out, stream } = sink(false)
      const bar = new ProgressBar('eval', { stream, width: 0 })
      for (let n = 0; n <= 1500; n++) bar.update(n / 1500, `${n}/1500 positions`)
      bar.done()
      assert.equal(out.length, 11)
      assert.ok(out.every(l => l.endsWith('\n') && !l.includes('\r')))
      assert.equal(out[0], 'eval 0% 0/1500 positions\n')
      assert.equal(out[10], 'eval 100% 1500/1500 positions\n')
    })

    it('on a terminal: one line redrawn with \\r, ended by done()', () => {
      const { out, stream } = sink(true)
      const bar = new ProgressBar('loading model', { stream })
      for (let i = 0; i <= 100; i++) bar.update(i / 100)
      bar.done()
      assert.ok(out.slice(0, -1).every(s => s.startsWith('\r') && !s.includes('\n')))
      assert.equal(out[out.length - 1], '\n')
    })
  })

  describe('warnings', () => {
    it('only node:sqlite\'s ExperimentalWarning is dropped', () => {
      assert.ok(isSqliteExperimentalWarning('SQLite is an experimental feature and might change at any time', 'ExperimentalWarning'))
      const w = new Error('SQLite is an experimental feature and might change at any time')
      w.name = 'ExperimentalWarning'
      assert.ok(isSqliteExperimentalWarning(w))
      assert.ok(!isSqliteExperimentalWarning('SQLite is an experimental feature', 'DeprecationWarning'))
      assert.ok(!isSqliteExperimentalWarning('WASI is an experimental feature', 'ExperimentalWarning'))
    })

    it('meshllm tasks (node:sqlite) writes nothing on stderr; other warnings still print', async () => {
      const r = await meshllm(['tasks', '--db', ':memory:'])
      assert.equal(r.code, 0, r.stderr)
      assert.equal(r.stdout, 'no tasks\n')
      assert.equal(r.stderr, '')
      const other = `data:text/javascript,${encodeURIComponent("process.emitWarning('a warning of its own', 'ExperimentalWarning')")}`
      const w = await meshllm(['tasks', '--db', ':memory:'], {}, ['--import', other])
      assert.match(w.stderr, /ExperimentalWarning: a warning of its own/)
      assert.doesNotMatch(w.stderr, /SQLite/)
    })
  })

  it('meshllm tasks lists the node\'s one task table: the agent\'s tasks and the API\'s, filtered by the agent\'s state; by default the file join serves its API from', async () => {
    const home = await mkdtemp(join(tmpdir(), 'meshllm-tasks-'))
    try {
      // what `meshllm join` (no --data-dir) serves its API from, with MESHLLM_HOME set
      const file = taskDbPath(defaultDataDir({ MESHLLM_HOME: home }))
      const store = new TaskStore(file)
      const submitted = store.add({ type: 'flag_expert', params: { expert: 'E1', reason: 'slow' }, description: 'look at E1', source: 'grpc' }, assessTask('flag_expert', { expert: 'E1', reason: 'slow' }, { readOnly: false, phase: 0 }))
      const recorded = store.addAgentTask({ cycle: 1, domain: 'security', title: 'security audit, cycle 1: no issue', rationale: 'every cycle', evidence: ['spot check a vs b'], actions: [{ type: 'report', params: { title: 'audit' }, tier: 'READ_ONLY', known: true, state: 'executed', reason: '', needs: [] }], output: '# audit', source: 'audit' })
      store.close()
      const text = await meshllm(['tasks'], { MESHLLM_HOME: home })
      assert.equal(text.code, 0, text.stderr)
      assert.deepEqual(text.stdout.split('\n').filter(l => l.startsWith('task_')), [
        `${recorded.id}  [executed]  security: security audit, cycle 1: no issue`,
        `${submitted.id}  [awaiting_review]  api: look at E1`
      ])
      const json = await meshllm(['tasks', '--json', '--state', 'awaiting_review'], { MESHLLM_HOME: home })
      assert.equal(json.code, 0, json.stderr)
      assert.deepEqual(JSON.parse(json.stdout), { tasks: [{ id: submitted.id, domain: '', title: '', rationale: 'look at E1', evidence: [], actions: [{ type: 'flag_expert', tier: 'SUGGEST', params: { expert: 'E1', reason: 'slow' } }], state: 'awaiting_review', origin: 'api' }] })
      const bad = await meshllm(['tasks', '--state', 'done'], { MESHLLM_HOME: home })
      assert.equal(bad.code, 2)
    } finally {
      await rm(home, { recursive: true, force: true })
    }
  })

  it('agent --min-experts defaults to K (-k, else the generation default), not the 280 of a large mesh', () => {
    assert.equal(defaultMinExperts(undefined), GENERATE_DEFAULTS.k)
    assert.equal(defaultMinExperts(5), 5)
  })

  it('generate: words after -- belong to the prompt (parsed, then refused for --speculative with --via, never dialled)', async () => {
    const r = await meshllm(['generate', '--speculative', '--via', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWHdvXGAZE54K4W6MuRY1fPZ29xKuMk7NBYwJTHRsg42fS', '--', '--not-an-option'])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /^meshllm: --speculative and --drafter need --bootstrap/)
  })
})
