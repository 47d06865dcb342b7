/*
 * The node's one task table (src/tasks/store.ts) on the real node:sqlite: the API's tasks and
 * the agent's side by side, the state mapping both ways, one file for `join`'s API and
 * `meshllm agent`, the files of the two former layouts, named errors, retention.
 */
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import fc from 'fast-check'
import { Tier } from '../../src/governance/tiers.js'
import { TaskStore } from '../../src/tasks/store.js'
import { ACTION_STATES, InvalidTaskError, TASK_STATES, TaskNotFoundError, agentTaskFacts, assessTask, stateOf, storedOf, type ActionState, type TaskAction } from '../../src/tasks/model.js'
import { AgentStore } from '../../src/agent/store.js'
import { TasksApi } from '../../src/api/task-api.js'
import { toApiError } from '../../src/api/errors.js'
import { listTasks } from '../../src/agent/agent.js'
import { defaultAgentDb } from '../../src/agent/cli.js'
import { defaultDataDir, taskDbPath } from '../../src/node/data-dir.js'

const { DatabaseSync } = createRequire(import.meta.url)('node:sqlite') as typeof import('node:sqlite')
const PHASE0 = { readOnly: false, phase: 0 }
const tmp = async (): Promise<string> => await mkdtemp(join(tmpdir(), 'meshllm-tasks-'))

/** an action as the agent's gate leaves it */
const act = (type: string, tier: keyof typeof Tier, state: ActionState, needs: string[] = []): TaskAction => ({ type, params: {}, tier, known: true, state, reason: `${tier}: ${state}`, needs })
const report = (): TaskAction => act('report', 'READ_ONLY', 'executed')
const review = (): TaskAction => act('flag_expert', 'SUGGEST', 'awaiting_review', ['human review'])
const quorum = (): TaskAction => act('ban_expert', 'DEPLOY_MINOR', 'awaiting_quorum', ['deploy-minor quorum of keyholder approvals'])
const blocked = (): TaskAction => act('adjust_k', 'SANDBOX_TEST', 'blocked', ['phase ≥ 2 (PHASE vote by the keyholders)'])
const agentTask = (actions: TaskAction[], extra: Record<string, unknown> = {}): any => ({ cycle: 1, domain: 'network', title: 'a title', rationale: 'why', evidence: ['e'], actions, source: 'mesh', ...extra })

describe('tasks: the one task table', () => {
  it('an API task and an agent task side by side: tier, approval, status, the agent\'s state, origin', () => {
    const store = new TaskStore()
    const api = new TasksApi(store, undefined, false)
    try {
      const submitted = api.submit({ type: 'adjust_k', paramsJson: '{"k":4}', description: 'try K = 4', priority: 5, source: 'grpc' })
      const proposed = store.addAgentTask(agentTask([report(), quorum()], { output: '# report', findingKey: 'bandwidth:mesh' }))
      const audit = store.addAgentTask(agentTask([report()], { source: 'audit', domain: 'security', output: '# audit' }))
      const list = api.list({})
      assert.deepEqual(list.tasks.map(t => t.id), [audit.id, proposed.id, submitted.id])
      assert.equal(list.total, 3)
      const s = api.get(submitted.id)
      assert.deepEqual([s.origin, s.status, s.approval, s.tierName, s.state, s.priority, s.title, s.domain], ['api', 'queued', 'blocked', 'SANDBOX_TEST', 'blocked', 5, '', ''])
      assert.deepEqual(s.actions, [{ type: 'adjust_k', params: { k: 4 }, tier: 'SANDBOX_TEST', known: true, state: 'blocked', reason: s.approvalReason, needs: s.needs }])
      const p = api.get(proposed.id)
      assert.deepEqual([p.origin, p.status, p.approval, p.tierName, p.state, p.type, p.description, p.findingKey], ['agent', 'queued', 'pending', 'DEPLOY_MINOR', 'awaiting_quorum', 'ban_expert', 'why', 'bandwidth:mesh'])
      assert.equal(p.result, '# report')
      const a = api.get(audit.id)
      assert.deepEqual([a.status, a.approval, a.tierName, a.state, a.source], ['done', 'auto', 'READ_ONLY', 'executed', 'audit'])
      // the API's filters and the agent's view over the same rows
      assert.deepEqual(api.list({ status: 'queued' }).tasks.map(t => t.id), [proposed.id, submitted.id])
      assert.deepEqual(api.list({ status: 'done' }).tasks.map(t => t.id), [audit.id])
      assert.deepEqual(listTasks(store, { state: 'blocked' }).map(v => [v.id, v.origin, v.rationale]), [[submitted.id, 'api', 'try K = 4']])
      assert.deepEqual(listTasks(store, { state: 'awaiting_quorum' }).map(v => v.id), [proposed.id])
      assert.deepEqual(store.list({ origin: 'agent' }).tasks.map(t => t.id), [audit.id, proposed.id])
      // the API's bounds are the API's, whatever else is in the table
      assert.throws(() => api.list({ status: 'executed' }), (e: any) => e.name === 'ApiError' && e.param === 'status')
      assert.throws(() => api.list({ limit: 501 }), (e: any) => e.name === 'ApiError' && e.param === 'limit')
      assert.throws(() => api.submit({ type: 'report', paramsJson: 'x'.repeat(64 * 1024 + 1) }), (e: any) => e.name === 'ApiError' && e.param === 'params_json')
    } finally {
      store.close()
    }
  })

  it('the agent\'s state is the worst action\'s, and stateOf gives it back from status, approval and tier (every gate outcome, any order)', () => {
    const store = new TaskStore()
    try {
      const outcomes = [report, review, quorum, blocked, () => act('flag_expert', 'SUGGEST', 'rejected'), () => act('rewrite', 'DEPLOY_MAJOR', 'rejected'), () => act('deploy_model', 'DEPLOY_MAJOR', 'blocked'), () => act('suggest_config', 'SUGGEST', 'queued')]
      fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: outcomes.length - 1 }), { minLength: 1, maxLength: 5 }), (picks) => {
        const actions = picks.map(i => outcomes[i]())
        const worst = ['rejected', 'blocked', 'awaiting_quorum', 'awaiting_review', 'queued', 'executed'].find(s => actions.some(a => a.state === s))
        const t = store.addAgentTask(agentTask(actions))
        assert.equal(t.state, worst)
        assert.deepEqual({ status: t.status, approval: t.approval }, storedOf(worst as ActionState))
        assert.equal(store.list({ state: t.state, limit: 1 }).tasks[0].id, t.id, 'the SQL filter agrees with stateOf')
      }), { numRuns: 200 })
      // every state is reachable and its filter finds exactly the tasks in it
      for (const s of TASK_STATES) for (const t of store.list({ state: s, limit: 1000 }).tasks) assert.equal(t.state, s)
    } finally {
      store.close()
    }
    for (const s of ACTION_STATES) {
      const { status, approval } = storedOf(s)
      assert.equal(stateOf(status, approval, s === 'awaiting_quorum' ? Tier.DEPLOY_MINOR : Tier.SUGGEST), s)
    }
    assert.equal(stateOf('running', 'auto', Tier.READ_ONLY), 'running')
    assert.equal(stateOf('failed', 'auto', Tier.READ_ONLY), 'failed')
  })

  it('refuses, by name, an agent task whose action state its tier cannot have', () => {
    const store = new TaskStore()
    try {
      const bad = [act('flag_expert', 'SUGGEST', 'awaiting_quorum'), act('ban_expert', 'DEPLOY_MINOR', 'awaiting_review'), act('ban_expert', 'DEPLOY_MINOR', 'executed'), act('report', 'NO_TIER' as any, 'executed'), act('report', 'READ_ONLY', 'done' as any)]
      for (const a of bad) assert.throws(() => store.addAgentTask(agentTask([a])), (e: any) => e.name === 'InvalidTaskError', JSON.stringify(a))
      assert.equal(store.count(), 0)
      assert.throws(() => store.list({ status: 'sleeping' as any }), (e: any) => e.name === 'InvalidTaskError')
      assert.throws(() => store.list({ state: 'sleeping' as any }), (e: any) => e.name === 'InvalidTaskError')
      assert.throws(() => store.add({ type: 'report' }, { ...assessTask('report', {}, PHASE0), approval: 'maybe' as any }), (e: any) => e.name === 'InvalidTaskError')
      assert.throws(() => new TaskStore(':memory:', { maxTasks: 0 }), RangeError)
      // should one reach the API: INVALID_ARGUMENT and NOT_FOUND, not INTERNAL
      assert.equal(toApiError(new InvalidTaskError('x')).kind, 'invalid_argument')
      assert.deepEqual([toApiError(new TaskNotFoundError('x')).kind, toApiError(new TaskNotFoundError('x')).code], ['not_found', 'task_not_found'])
      assert.deepEqual(agentTaskFacts([]), { ...agentTaskFacts([]), state: 'queued', status: 'queued', approval: 'auto', tier: Tier.READ_ONLY })
    } finally {
      store.close()
    }
  })

  it('one file: join\'s API and `meshllm agent` (two connections, as two processes have) see each other\'s tasks', async () => {
    const file = taskDbPath(await tmp())
    const api = new TasksApi(new TaskStore(file), undefined, true)
    const agent = new AgentStore(file)
    try {
      const submitted = api.submit({ type: 'report', paramsJson: '{"title":"weekly"}' })
      const c = agent.startCycle()
      const recorded = agent.tasks.addAgentTask(agentTask([report()], { cycle: c, output: 'done' }))
      assert.deepEqual(api.list({}).tasks.map(t => t.id), [recorded.id, submitted.id])
      assert.deepEqual(listTasks(agent.tasks).map(v => [v.id, v.state]), [[recorded.id, 'executed'], [submitted.id, 'queued']])
    } finally {
      api.close()
      agent.close()
    }
    const again = new TaskStore(file)
    assert.equal(again.count(), 2, 'persisted')
    again.close()
    // `meshllm agent` / `meshllm tasks` default to the file `meshllm join` serves its API from
    assert.equal(defaultAgentDb({ MESHLLM_HOME: '/srv/mesh' }), taskDbPath(defaultDataDir({ MESHLLM_HOME: '/srv/mesh' })))
    assert.equal(defaultAgentDb({ MESHLLM_HOME: '/srv/mesh' }), '/srv/mesh/node/tasks.sqlite')
    assert.equal(defaultAgentDb({ MESHLLM_AGENT_DB: '/tmp/x.db', MESHLLM_HOME: '/srv/mesh' }), '/tmp/x.db')
  })

  it('two processes writing one file at once (join\'s API, `meshllm agent`): every insert lands, none is refused as busy', async () => {
    const file = taskDbPath(await tmp())
    new TaskStore(file).close()
    const storeUrl = new URL('../../src/tasks/store.js', import.meta.url).href
    const script = `const { TaskStore } = await import(${JSON.stringify(storeUrl)}); const s = new TaskStore(${JSON.stringify(file)});
      const a = { type: 'report', params: {}, tier: 'READ_ONLY', known: true, state: 'executed', reason: '', needs: [] };
      for (let i = 0; i < 300; i++) s.addAgentTask({ cycle: i, domain: 'network', title: 'child ' + i, rationale: '', evidence: [], actions: [a], source: 'audit' });
      s.close()`
    const child = spawn(process.execPath, ['--no-warnings', '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => { stderr += String(d) })
    const exited = new Promise<number | null>(resolve => child.once('exit', resolve))
    const api = new TasksApi(new TaskStore(file), undefined, true)
    try {
      for (let i = 0; i < 300; i++) {
        api.submit({ type: 'report', paramsJson: `{"title":"parent ${i}"}` })
        if (i % 25 === 0) await new Promise(resolve => setImmediate(resolve))
      }
      assert.equal(await exited, 0, stderr)
      assert.equal(api.list({}).total, 600)
      assert.equal(api.store.list({ origin: 'agent' }).total, 300)
    } finally {
      api.close()
    }
  })

  it('opens a file of the API\'s former queue: its columns kept, the agent\'s added', async () => {
    const file = join(await tmp(), 'tasks.sqlite')
    const old = new DatabaseSync(file)
    old.exec(`CREATE TABLE tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, params TEXT NOT NULL, description TEXT NOT NULL, status TEXT NOT NULL,
      tier INTEGER NOT NULL, known_action INTEGER NOT NULL, approval TEXT NOT NULL, approval_reason TEXT NOT NULL, needs TEXT NOT NULL, priority INTEGER NOT NULL, source TEXT NOT NULL,
      created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, result TEXT);
      CREATE INDEX tasks_queue ON tasks (status, priority DESC, seq);`)
    old.prepare("INSERT INTO tasks (id, type, params, description, status, tier, known_action, approval, approval_reason, needs, priority, source, created_at, updated_at, result) VALUES (?, 'report', '{\"title\":\"x\"}', 'old', ?, 0, 1, 'auto', 'READ_ONLY: read-only', '[]', 3, 'grpc', 10, 20, ?)").run('task_old', 'done', '{"ok":1}')
    old.prepare("INSERT INTO tasks (id, type, params, description, status, tier, known_action, approval, approval_reason, needs, priority, source, created_at, updated_at, result) VALUES (?, 'report', '{}', '', ?, 0, 1, 'auto', '', '[]', 0, '', 11, 21, NULL)").run('task_claimed', 'running')
    old.close()
    const store = new TaskStore(file)
    try {
      const t = store.get('task_old')!
      assert.deepEqual([t.origin, t.status, t.state, t.description, t.priority, t.result, t.createdAtMs, t.title, t.evidence], ['api', 'done', 'executed', 'old', 3, { ok: 1 }, 10, '', []])
      assert.equal(store.get('task_claimed')?.state, 'running', 'a status an old consumer set stays readable')
      const added = store.addAgentTask(agentTask([review()]))
      assert.deepEqual(store.list().tasks.map(x => x.id), [added.id, 'task_claimed', 'task_old'])
    } finally {
      store.close()
    }
    const check = new DatabaseSync(file)
    assert.deepEqual((check.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'tasks_queue'").all()), [])
    check.close()
  })

  it('opens a file of the agent\'s former table: every task converted in order (a human rejection stays one), cycles and approvals kept', async () => {
    const file = join(await tmp(), 'agent.db')
    const old = new DatabaseSync(file)
    old.exec(`CREATE TABLE cycles (id INTEGER PRIMARY KEY AUTOINCREMENT, started INTEGER NOT NULL, ended INTEGER, state TEXT NOT NULL, mode TEXT, summary TEXT NOT NULL DEFAULT '{}');
      CREATE TABLE tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, updated INTEGER NOT NULL, cycle INTEGER NOT NULL, domain TEXT NOT NULL,
        title TEXT NOT NULL, rationale TEXT NOT NULL, evidence TEXT NOT NULL, actions TEXT NOT NULL, state TEXT NOT NULL, output TEXT, source TEXT NOT NULL, finding_key TEXT, meta TEXT);
      CREATE INDEX tasks_state ON tasks (state, seq);
      CREATE INDEX tasks_finding ON tasks (finding_key, created);
      CREATE TABLE approvals (id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, at INTEGER NOT NULL, by TEXT NOT NULL, decision TEXT NOT NULL, note TEXT NOT NULL);
      INSERT INTO cycles (started, ended, state, summary) VALUES (1, 2, 'done', '{"experts":["a"]}');`)
    const ins = old.prepare('INSERT INTO tasks (id, created, updated, cycle, domain, title, rationale, evidence, actions, state, output, source, finding_key, meta) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
    ins.run('task_a', 100, 100, 'security', 'audit', 'every cycle', '["spot check"]', JSON.stringify([report()]), 'executed', '# audit', 'audit', null, null)
    ins.run('task_b', 200, 300, 'network', 'dht', 'empty', '["0"]', JSON.stringify([review()]), 'rejected', null, 'mesh', 'dht_empty:node', '{"tokens":9}')
    ins.run('task_c', 400, 400, 'capacity', 'ban', 'slow', '[]', JSON.stringify([report(), quorum()]), 'awaiting_quorum', '# r', 'mesh', 'expert_failing:x', null)
    old.prepare("INSERT INTO approvals (task_id, at, by, decision, note) VALUES ('task_b', 300, 'bob', 'reject', 'no')").run()
    old.close()
    const agent = new AgentStore(file)
    try {
      const store = agent.tasks
      assert.deepEqual(store.list().tasks.map(t => [t.id, t.origin, t.state, t.status, t.approval]), [
        ['task_c', 'agent', 'awaiting_quorum', 'queued', 'pending'],
        ['task_b', 'agent', 'rejected', 'cancelled', 'blocked'],
        ['task_a', 'agent', 'executed', 'done', 'auto']
      ])
      const b = store.get('task_b')!
      assert.deepEqual([b.description, b.title, b.domain, b.evidence, b.findingKey, b.meta, b.createdAtMs, b.updatedAtMs, b.cycle, b.type], ['empty', 'dht', 'network', ['0'], 'dht_empty:node', { tokens: 9 }, 200, 300, 1, 'flag_expert'])
      assert.equal(store.get('task_a')?.result, '# audit')
      assert.deepEqual(store.approvals('task_b').map(a => [a.by, a.decision]), [['bob', 'reject']])
      assert.deepEqual(agent.cycle(1)?.summary, { experts: ['a'] })
      assert.equal(store.openTaskFor('expert_failing:x', 0)?.id, 'task_c')
    } finally {
      agent.close()
    }
    const check = new DatabaseSync(file)
    assert.deepEqual(check.prepare("SELECT name FROM sqlite_master WHERE name LIKE 'tasks%' ORDER BY name").all().map((r: any) => r.name), ['tasks', 'tasks_cycle', 'tasks_finding', 'tasks_status'])
    check.close()
    // opened again: nothing converted twice
    const again = new TaskStore(file)
    assert.equal(again.count(), 3)
    again.close()
  })

  it('refuses, by name, a tasks table of no known layout', async () => {
    const file = join(await tmp(), 'other.db')
    const old = new DatabaseSync(file)
    old.exec('CREATE TABLE tasks (id TEXT, what TEXT)')
    old.close()
    assert.throws(() => new TaskStore(file), (e: any) => e.name === 'TaskDatabaseError' && /unknown layout/.test(e.message))
  })

  it('keeps the newest maxTasks tasks, whoever recorded them, with their approvals', () => {
    const store = new TaskStore(':memory:', { maxTasks: 4 })
    try {
      const first = store.add({ type: 'report' }, assessTask('report', {}, PHASE0))
      store.addApproval(first.id, { by: 'alice', decision: 'approve' })
      const ids: string[] = [first.id]
      for (let i = 0; i < 6; i++) ids.push(i % 2 === 0 ? store.addAgentTask(agentTask([report()])).id : store.add({ type: 'report' }, assessTask('report', {}, PHASE0)).id)
      assert.equal(store.count(), 4)
      assert.deepEqual(store.list().tasks.map(t => t.id), ids.slice(-4).reverse())
      assert.equal(store.get(first.id), undefined)
      assert.deepEqual(store.approvals(first.id), [])
    } finally {
      store.close()
    }
  })
})
