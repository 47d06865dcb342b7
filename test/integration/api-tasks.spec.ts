/**
 * The task RPCs over the node's one task table (src/tasks/store.ts), as `meshllm join` serves
 * them: the API's store a SQLite file, a routing node with governance (phase 0), no experts
 * (no task RPC needs one). SubmitSelfTask / GetTask / ListTasks through @grpc/grpc-js built
 * from the .proto; the agent's tasks recorded through a second connection to the same file;
 * the same tasks on GET /api/tasks and in the dashboard (Chromium).
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { defaultThresholds } from '../../src/governance/config.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GovernanceService } from '../../src/governance/service.js'
import { startApi, protoPath, LOADER_OPTIONS, type ApiHandle } from '../../src/api/index.js'
import { AgentStore } from '../../src/agent/store.js'
import { taskDbPath } from '../../src/node/data-dir.js'

type Client = grpc.Client & Record<string, any>

function unary (client: Client, method: string, req: object): Promise<any> {
  return new Promise((resolve, reject) => {
    client[method](req, new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (err: grpc.ServiceError | null, res: any) => { if (err != null) reject(err); else resolve(res) })
  })
}

const grpcCode = (code: grpc.status) => (e: any): boolean => { assert.equal(e.code, code, `expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`); return true }

describe('API tasks: SubmitSelfTask, GetTask, ListTasks over the one task table', function () {
  this.timeout(60_000)
  let dir: string
  let file: string
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let gov: GovernanceService
  let api: ApiHandle
  let client: Client

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshllm-api-tasks-'))
    file = taskDbPath(dir)
    const keys = await Promise.all([1, 2, 3].map(async () => await generateKeyPair('Ed25519')))
    const config = { meshId: `api-tasks-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 3_600_000, revertOnHalt: 3 }
    node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    tokenizer = await RouterTokenizer.load('meshtest-c')
    gov = new GovernanceService(node, new GovernanceState(config))
    await gov.start()
    api = await startApi({ node, router: new Router(node, tokenizer), governance: gov, grpc: '127.0.0.1:0', http: '127.0.0.1:0', tasks: file })
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), LOADER_OPTIONS)) as any
    client = new pkg.meshllm.v1.MeshLLM(`127.0.0.1:${api.grpcPort}`, grpc.credentials.createInsecure())
  })

  after(async () => {
    client?.close()
    await api?.close()
    await gov?.stop()
    await tokenizer?.close()
    await node?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('GetTask: NOT_FOUND for an unknown id', async () => {
    await assert.rejects(unary(client, 'GetTask', { id: 'task_nope' }), grpcCode(grpc.status.NOT_FOUND))
  })

  it('SubmitSelfTask queues tasks with their tier and approval; GetTask / ListTasks read them back', async () => {
    const report = await unary(client, 'SubmitSelfTask', { type: 'report', paramsJson: '{"title":"weekly throughput"}', description: 'summarise tokens/s', priority: 2 })
    assert.match(report.id, /^task_/)
    assert.equal(report.status, 'queued')
    assert.equal(report.tierName, 'READ_ONLY')
    assert.equal(report.approval, 'auto')
    assert.equal(report.source, 'grpc')
    assert.equal(report.origin, 'api')
    assert.equal(report.title, '')
    assert.deepEqual(JSON.parse(report.actionsJson).map((a: any) => [a.type, a.tier, a.state]), [['report', 'READ_ONLY', 'queued']])
    const sandbox = await unary(client, 'SubmitSelfTask', { type: 'adjust_k', paramsJson: '{"k":4}' })
    assert.equal(sandbox.tier, 2)
    assert.equal(sandbox.tierName, 'SANDBOX_TEST')
    assert.equal(sandbox.approval, 'blocked', 'phase 0 does not allow sandbox tests')
    assert.ok(sandbox.needs.some((n: string) => /phase/.test(n)))
    const unknown = await unary(client, 'SubmitSelfTask', { type: 'rewrite_everything' })
    assert.equal(unknown.tierName, 'DEPLOY_MAJOR')
    assert.equal(unknown.knownAction, false)
    await assert.rejects(unary(client, 'SubmitSelfTask', { type: 'report', paramsJson: '{not json' }), grpcCode(grpc.status.INVALID_ARGUMENT))
    const got = await unary(client, 'GetTask', { id: report.id })
    assert.deepEqual(got, report)
    assert.deepEqual(JSON.parse(got.paramsJson), { title: 'weekly throughput' })
    const all = await unary(client, 'ListTasks', {})
    assert.equal(all.total, 3)
    assert.deepEqual(all.tasks.map((t: any) => t.id), [unknown.id, sandbox.id, report.id])
    const page = await unary(client, 'ListTasks', { status: 'queued', limit: 1, offset: 1 })
    assert.equal(page.total, 3)
    assert.deepEqual(page.tasks.map((t: any) => t.id), [sandbox.id])
    await assert.rejects(unary(client, 'ListTasks', { status: 'sleeping' }), grpcCode(grpc.status.INVALID_ARGUMENT))
  })

  it('one task table: a task the agent records in the same file is listed by ListTasks and read by GetTask beside the submitted ones', async () => {
    const before = await unary(client, 'ListTasks', {})
    assert.ok(before.total >= 3 && before.tasks.every((t: any) => t.origin === 'api'))
    // `meshllm agent --db <the join's tasks.sqlite>`: its own connection to the API's file
    const agentStore = new AgentStore(file)
    const tasks = agentStore.tasks
    const cycle = agentStore.startCycle()
    const t = tasks.addAgentTask({
      cycle,
      domain: 'network',
      title: 'the DHT routing table is empty',
      rationale: 'no peer answers DHT queries',
      evidence: ['DHT routing table 0'],
      actions: [
        { type: 'report', params: { title: 'DHT empty' }, tier: 'READ_ONLY', known: true, state: 'executed', reason: 'READ_ONLY: read-only', needs: [] },
        { type: 'change_aggregation_rule', params: { rule: 'product' }, tier: 'DEPLOY_MINOR', known: true, state: 'awaiting_quorum', reason: 'DEPLOY_MINOR: needs a motion approved by the keyholders', needs: ['deploy-minor quorum of keyholder approvals'] }
      ],
      output: '# DHT empty',
      source: 'mesh',
      findingKey: 'dht_empty:node'
    })
    const all = await unary(client, 'ListTasks', {})
    assert.equal(all.total, before.total + 1)
    assert.deepEqual(all.tasks.map((x: any) => x.id), [t.id, ...before.tasks.map((x: any) => x.id)])
    const got = await unary(client, 'GetTask', { id: t.id })
    assert.deepEqual(got, all.tasks[0])
    assert.equal(got.origin, 'agent')
    assert.equal(got.source, 'mesh')
    assert.equal(got.title, 'the DHT routing table is empty')
    assert.equal(got.domain, 'network')
    assert.equal(got.description, 'no peer answers DHT queries')
    assert.deepEqual(got.evidence, ['DHT routing table 0'])
    // the agent's state awaiting_quorum is status queued + approval pending at DEPLOY_MINOR (docs/api.md)
    assert.equal(got.status, 'queued')
    assert.equal(got.approval, 'pending')
    assert.equal(got.tierName, 'DEPLOY_MINOR')
    assert.equal(got.type, 'change_aggregation_rule')
    assert.deepEqual(JSON.parse(got.paramsJson), { rule: 'product' })
    assert.deepEqual(got.needs, ['deploy-minor quorum of keyholder approvals'])
    assert.deepEqual(JSON.parse(got.actionsJson).map((a: any) => a.state), ['executed', 'awaiting_quorum'])
    assert.equal(JSON.parse(got.resultJson), '# DHT empty')
    const queued = await unary(client, 'ListTasks', { status: 'queued', limit: 500 })
    assert.ok(queued.tasks.some((x: any) => x.id === t.id))
    // a human rejection: status cancelled for the API, rejected for `meshllm tasks`
    tasks.addApproval(t.id, { by: 'alice', decision: 'reject' })
    assert.equal((await unary(client, 'GetTask', { id: t.id })).status, 'cancelled')
    assert.deepEqual((await unary(client, 'ListTasks', { status: 'cancelled' })).tasks.map((x: any) => x.id), [t.id])
    assert.equal(api.api.tasks.store.get(t.id)?.state, 'rejected')
    // and the agent's connection sees what the API recorded
    assert.deepEqual(tasks.list({ origin: 'api' }).tasks.map(x => x.id), before.tasks.map((x: any) => x.id))
    agentStore.close()
    assert.equal(api.api.tasks.store.db.isOpen, true, 'the API\'s store stays open')
    assert.equal((await unary(client, 'ListTasks', {})).total, before.total + 1)
  })
  it('the same table over HTTP: GET /api/tasks (ListTasks\' bounds) and the dashboard\'s task list (Chromium)', async () => {
    const base = `http://127.0.0.1:${api.httpPort}`
    const grpcList = await unary(client, 'ListTasks', {})
    const r = await fetch(`${base}/api/tasks?limit=500`)
    assert.equal(r.status, 200)
    const body = await r.json() as any
    assert.equal(body.total, grpcList.total)
    assert.deepEqual(body.tasks.map((t: any) => [t.id, t.origin, t.status]), grpcList.tasks.map((t: any) => [t.id, t.origin, t.status]))
    assert.ok(body.tasks.some((t: any) => t.origin === 'agent' && t.state === 'rejected'))
    const queued = await (await fetch(`${base}/api/tasks?status=queued&limit=1&offset=1`)).json() as any
    assert.equal(queued.tasks.length, 1)
    for (const q of ['status=executed', 'limit=501', 'limit=-1', 'offset=x']) {
      const bad = await fetch(`${base}/api/tasks?${q}`)
      assert.equal(bad.status, 400, q)
      assert.equal((await bad.json() as any).error.type, 'invalid_request_error')
    }
    assert.equal((await fetch(`${base}/api/tasks`, { method: 'POST' })).status, 405)
    const snap = await (await fetch(`${base}/api/dashboard`)).json() as any
    assert.equal(snap.tasks.total, grpcList.total)
    assert.deepEqual(snap.tasks.latest.map((t: any) => t.id), grpcList.tasks.slice(0, 10).map((t: any) => t.id))

    const CHROMIUM = '/usr/bin/chromium'
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: .ci/run installs Debian chromium`)
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
      const errors: string[] = []
      page.on('pageerror', e => { errors.push(e.message) })
      await page.goto(base + '/')
      await page.waitForFunction("document.querySelectorAll('#tasks tr[data-task]').length > 0", undefined, { timeout: 15_000 })
      const rows = await page.$$eval('#tasks tr[data-task]', els => els.map(e => [e.getAttribute('data-task'), e.getAttribute('data-origin'), e.textContent]))
      assert.deepEqual(rows.map(x => x[0]), snap.tasks.latest.map((t: any) => t.id))
      const agentRow = rows.find(x => x[1] === 'agent')!
      assert.match(agentRow[2] ?? '', /agent \(mesh\).*rejected.*DEPLOY_MINOR.*change_aggregation_rule.*network: the DHT routing table is empty/)
      assert.ok(rows.some(x => x[1] === 'api' && /api \(grpc\).*blocked.*SANDBOX_TEST.*adjust_k/.test(x[2] ?? '')))
      assert.match((await page.textContent('#tasks-total')) ?? '', new RegExp(`\\(${String(grpcList.total)}\\)`))
      assert.deepEqual(errors, [])
      await page.close()
    } finally {
      await browser.close()
    }
  })
})
