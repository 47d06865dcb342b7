/**
 * Client APIs on a real mesh: 2 expert processes (meshtest-a, meshtest-c) and an in-process
 * routing node with governance, serving gRPC + the OpenAI-compatible HTTP API + /metrics +
 * the dashboard on loopback. Driven by real clients: @grpc/grpc-js built from the .proto
 * (health and reflection too), the official `openai` npm client, plain fetch, and Chromium
 * through playwright-core (screenshot: test/artifacts/dashboard.png).
 */
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request as httpRequest } from 'node:http'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { protoPath as healthProtoPath } from 'grpc-health-check'
import OpenAI from 'openai'
import { chromium, type Browser } from 'playwright-core'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { discoverExperts } from '../../src/router/discovery.js'
import { configToJson, defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GovernanceService } from '../../src/governance/service.js'
import { startApi, protoPath, LOADER_OPTIONS, ChatFormatter, type ApiHandle } from '../../src/api/index.js'
import { waitFor } from '../helpers/wait.js'

const ARTIFACTS = fileURLToPath(new URL('../../../test/artifacts/', import.meta.url))
const CHROMIUM = '/usr/bin/chromium'

type Client = grpc.Client & Record<string, any>

function unary (client: Client, method: string, req: object, md = new grpc.Metadata(), deadlineMs = 20_000): Promise<any> {
  return new Promise((resolve, reject) => {
    client[method](req, md, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: any) => { if (err != null) reject(err); else resolve(res) })
  })
}

function generateStream (client: Client, req: object, opts: { deadline?: number, onToken?: () => void } = {}): Promise<{ tokens: any[], summary?: any, error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const tokens: any[] = []
    let summary: any
    const call = client.Generate(req, new grpc.Metadata(), opts.deadline != null ? { deadline: opts.deadline } : {})
    call.on('data', (ev: any) => { if (ev.token != null) { tokens.push(ev.token); opts.onToken?.() } if (ev.summary != null) summary = ev.summary })
    call.on('error', (error: grpc.ServiceError) => { resolve({ tokens, summary, error }) })
    call.on('end', () => { resolve({ tokens, summary }) })
  })
}

const grpcCode = (code: grpc.status) => (e: any): boolean => { assert.equal(e.code, code, `expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`); return true }

function metricValue (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m == null || m[1] !== name) continue
    const ls = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) return Number(m[3])
  }
  return undefined
}

describe('client APIs: gRPC, OpenAI-compatible HTTP, metrics, dashboard', function () {
  this.timeout(60_000)
  const experts: SpawnedExpert[] = []
  let keys: PrivateKey[]
  let config: GovernanceConfig
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let gov: GovernanceService
  let router: Router
  let api: ApiHandle
  let client: Client
  let openai: OpenAI
  let base: string
  let byModel: Record<string, string>
  let browser: Browser | undefined

  before(async function () {
    this.timeout(120_000)
    keys = await Promise.all([1, 2, 3].map(async () => generateKeyPair('Ed25519')))
    config = {
      meshId: `api-test-${Date.now()}`,
      keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })),
      thresholds: defaultThresholds(3),
      reviewPeriodMs: 24 * 3_600_000,
      revertOnHalt: 3
    }
    const dir = await mkdtemp(join(tmpdir(), 'meshllm-api-'))
    const govFile = join(dir, 'governance.json')
    await writeFile(govFile, JSON.stringify(configToJson(config)))
    const a = await spawnExpert('meshtest-a', ['--governance', govFile, '--max-sessions', '6'])
    experts.push(a)
    experts.push(await spawnExpert('meshtest-c', ['--governance', govFile, '--max-sessions', '6', '--bootstrap', a.addr]))
    byModel = { a: experts[0].addr.split('/p2p/')[1], c: experts[1].addr.split('/p2p/')[1] }
    node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    await connectBootstrap(node, [a.addr])
    tokenizer = await RouterTokenizer.load('meshtest-c')
    gov = new GovernanceService(node, new GovernanceState(config))
    await gov.start()
    router = new Router(node, tokenizer, { haltReason: () => gov.haltReason })
    await waitFor(async () => (await router.experts(true)).compatible.length >= 2, 20_000, 'both experts on the DHT')
    api = await startApi({ node, router, governance: gov, grpc: '127.0.0.1:0', http: '127.0.0.1:0', attachDefaults: { threads: 1 } })
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), LOADER_OPTIONS)) as any
    client = new pkg.meshllm.v1.MeshLLM(`127.0.0.1:${api.grpcPort}`, grpc.credentials.createInsecure())
    base = `http://127.0.0.1:${api.httpPort}`
    openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'x', maxRetries: 0 })
  })

  after(async function () {
    this.timeout(30_000)
    await browser?.close().catch(() => {})
    client?.close()
    await api?.close()
    await gov?.stop()
    await tokenizer?.close()
    await node?.stop()
    await Promise.all(experts.map(stopExpert))
  })

  describe('gRPC', () => {
    it('health check says SERVING, reflection lists the service', async () => {
      const hpkg = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, LOADER_OPTIONS)) as any
      const health = new hpkg.grpc.health.v1.Health(`127.0.0.1:${api.grpcPort}`, grpc.credentials.createInsecure())
      for (const service of ['', 'meshllm.v1.MeshLLM']) {
        const r = await unary(health, 'Check', { service })
        assert.equal(r.status, 'SERVING', service)
      }
      health.close()
      const reflPath = fileURLToPath(new URL('../../../node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto', import.meta.url))
      const rpkg = grpc.loadPackageDefinition(protoLoader.loadSync(reflPath, LOADER_OPTIONS)) as any
      const refl = new rpkg.grpc.reflection.v1.ServerReflection(`127.0.0.1:${api.grpcPort}`, grpc.credentials.createInsecure())
      const ask = (req: object): Promise<any> => new Promise((resolve, reject) => {
        const call = refl.ServerReflectionInfo()
        call.on('data', (d: any) => { resolve(d); call.end() })
        call.on('error', reject)
        call.write(req)
      })
      const list = await ask({ listServices: '*' })
      const names = list.listServicesResponse.service.map((s: any) => s.name)
      assert.ok(names.includes('meshllm.v1.MeshLLM'), names.join(', '))
      assert.ok(names.includes('grpc.health.v1.Health'), names.join(', '))
      const file = await ask({ fileContainingSymbol: 'meshllm.v1.MeshLLM' })
      assert.ok(file.fileDescriptorResponse.fileDescriptorProto.length > 0, 'descriptor of the service')
      refl.close()
    })

    it('GetRouterStatus: online experts with model, fingerprint, tokens/s, health; K policy; halt state', async () => {
      const s = await unary(client, 'GetRouterStatus', { refresh: true })
      assert.equal(s.peerId, node.peerId.toString())
      assert.equal(s.expertsOnline, 2)
      assert.deepEqual(s.experts.map((e: any) => e.model).sort(), ['meshtest-a', 'meshtest-c'])
      for (const e of s.experts) {
        assert.match(e.fingerprint, /^[0-9a-f]{64}$/)
        assert.ok(e.tokensPerSecond > 0)
        assert.equal(e.contextLength, 512)
        assert.ok(['unknown', 'healthy', 'degraded', 'circuit_open'].includes(e.health.state))
      }
      assert.equal(s.policy.defaultK, 3)
      assert.equal(s.policy.defaultRule, 'mixture')
      assert.equal(s.halt.halted, false)
      assert.equal(s.localExpert, null)
    })

    it('Generate streams one token event per token, then a summary', async () => {
      const r = await generateStream(client, { prompt: 'The kernel', k: 2, maxTokens: 12, seed: 7, ignoreEos: true })
      assert.equal(r.error, undefined, r.error?.details)
      assert.equal(r.tokens.length, 12)
      for (const t of r.tokens) assert.equal(t.experts.length, 2)
      assert.deepEqual(r.tokens.map(t => t.index), [...Array(12).keys()])
      assert.equal(r.summary.tokens, 12)
      assert.equal(r.summary.effectiveK, 2)
      assert.ok(r.summary.ttftMs > 0 && r.summary.ttftMs <= r.summary.elapsedMs, `ttftMs ${r.summary.ttftMs} of ${r.summary.elapsedMs}`)
      assert.equal(r.summary.text, r.tokens.map(t => t.text).join(''))
      assert.ok(r.summary.bytesPerExpertToken > 0 && r.summary.bytesPerExpertToken < 2000)
      const s = await unary(client, 'GetRouterStatus', {})
      assert.ok(s.stats.tokens >= 12 && s.stats.recentTokensPerSecond > 0)
      assert.ok(s.experts.some((e: any) => e.health.state === 'healthy' && e.health.samples > 0), 'health from the router')
    })

    it('bad input: INVALID_ARGUMENT (empty prompt, max_tokens beyond the context, unknown rule), UNAVAILABLE, DEADLINE_EXCEEDED', async () => {
      const bad = async (req: object, code: grpc.status, re: RegExp, deadline?: number): Promise<void> => {
        const r = await generateStream(client, req, { deadline })
        assert.ok(r.error != null, `expected ${grpc.status[code]}`)
        grpcCode(code)(r.error)
        assert.match(r.error.details, re)
      }
      await bad({ prompt: '' }, grpc.status.INVALID_ARGUMENT, /prompt is required/)
      await bad({ prompt: 'x', maxTokens: 600 }, grpc.status.INVALID_ARGUMENT, /beyond the context.*512/)
      await bad({ prompt: 'x', rule: 'vote' }, grpc.status.INVALID_ARGUMENT, /unknown aggregation rule "vote"/)
      await bad({ prompt: 'x', k: 65 }, grpc.status.INVALID_ARGUMENT, /k must be an integer/)
      await bad({ prompt: 'x', experts: ['12D3KooWNotAnExpertOnThisMesh'] }, grpc.status.UNAVAILABLE, /none of the requested experts/)
      await bad({ prompt: 'The kernel', maxTokens: 400, ignoreEos: true }, grpc.status.DEADLINE_EXCEEDED, /deadline|Deadline/i, Date.now() + 300)
      await assert.rejects(unary(client, 'GetTask', { id: 'task_nope' }), grpcCode(grpc.status.NOT_FOUND))
      // still serving
      const r = await generateStream(client, { prompt: 'git', k: 1, maxTokens: 3, ignoreEos: true })
      assert.equal(r.summary?.tokens, 3)
    })

    it('HaltMesh refuses anything but a keyholder-signed HALT (PERMISSION_DENIED); the node stays up', async () => {
      const now = Date.now()
      const msg = { kind: Kind.HALT as const, reason: 'forged', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }
      await assert.rejects(unary(client, 'HaltMesh', { envelope: Buffer.from('not an envelope') }), (e: any) => grpcCode(grpc.status.PERMISSION_DENIED)(e) && /malformed/.test(e.details))
      await assert.rejects(unary(client, 'HaltMesh', { envelope: Buffer.alloc(0) }), grpcCode(grpc.status.PERMISSION_DENIED))
      const outsider = await generateKeyPair('Ed25519')
      await assert.rejects(unary(client, 'HaltMesh', { envelope: await createEnvelope(msg, [outsider]) }), (e: any) => grpcCode(grpc.status.PERMISSION_DENIED)(e) && /not-keyholder/.test(e.details))
      // a keyholder-signed envelope of another kind is not a HALT
      const resume = await createEnvelope({ kind: Kind.RESUME, liftsVersion: 1, reason: 'x', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [keys[0], keys[1]])
      await assert.rejects(unary(client, 'HaltMesh', { envelope: resume }), (e: any) => grpcCode(grpc.status.PERMISSION_DENIED)(e) && /not a HALT/.test(e.details))
      // a signed message for another mesh
      await assert.rejects(unary(client, 'RelayGovernanceMessage', { envelope: await createEnvelope({ ...msg, meshId: 'other-mesh' }, [keys[0]]) }), grpcCode(grpc.status.PERMISSION_DENIED))
      await assert.rejects(unary(client, 'RelayGovernanceMessage', { envelope: Buffer.from([1, 2, 3]) }), grpcCode(grpc.status.INVALID_ARGUMENT))
      const g = await unary(client, 'GetGovernanceState', {})
      assert.equal(g.halt.halted, false)
      assert.equal(g.meshId, config.meshId)
      assert.equal(g.keyholders.length, 3)
      assert.ok(g.recent.filter((e: any) => !e.accepted).length >= 4)
      assert.ok(g.rejected.forged >= 1)
    })
  })

  describe('OpenAI-compatible HTTP (official openai client)', () => {
    it('lists the mesh and its expert models', async () => {
      const ids: string[] = []
      for await (const m of openai.models.list()) ids.push(m.id)
      assert.deepEqual(ids.sort(), ['meshllm', 'meshtest-a', 'meshtest-c'])
    })

    it('completions, with usage, seed, stop and the mesh extras k / rule', async () => {
      const r = await openai.completions.create({ model: 'meshllm', prompt: 'The kernel', max_tokens: 8, temperature: 0.7, k: 2, rule: 'product' } as any)
      assert.equal(r.object, 'text_completion')
      assert.equal(r.choices.length, 1)
      assert.equal(typeof r.choices[0].text, 'string')
      assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason))
      assert.ok(r.usage!.prompt_tokens >= 3)
      assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 8)
      assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens)
      assert.equal((r as any).meshllm.effective_k, 2)
      assert.ok((r as any).meshllm.ttft_ms > 0 && (r as any).meshllm.ttft_ms <= (r as any).meshllm.elapsed_ms)
      // one model = its experts only; same seed, same text
      const a1 = await openai.completions.create({ model: 'meshtest-a', prompt: 'Python is', max_tokens: 10, temperature: 0.9, seed: 42 })
      const a2 = await openai.completions.create({ model: 'meshtest-a', prompt: 'Python is', max_tokens: 10, temperature: 0.9, seed: 42 })
      assert.equal(a1.choices[0].text, a2.choices[0].text)
      assert.deepEqual((a1 as any).meshllm.experts, [byModel.a])
      // stop: the text ends before the stop string
      const greedy = await openai.completions.create({ model: 'meshtest-a', prompt: 'The kernel', max_tokens: 16, temperature: 0 })
      const text = greedy.choices[0].text
      const cut = text.slice(4, 8)
      assert.ok(cut.length === 4, `greedy text long enough: ${JSON.stringify(text)}`)
      const stopped = await openai.completions.create({ model: 'meshtest-a', prompt: 'The kernel', max_tokens: 16, temperature: 0, stop: [cut, 'zzzz-never'] })
      assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(cut)))
      assert.equal(stopped.choices[0].finish_reason, 'stop')
    })

    it('streams completions as server-sent events, usage in the last chunk', async () => {
      const stream = await openai.completions.create({ model: 'meshllm', prompt: 'The kernel', max_tokens: 10, top_p: 0.9, stream: true, stream_options: { include_usage: true } })
      let text = ''
      let chunks = 0
      let finish: string | null = null
      let usage: any
      for await (const c of stream) {
        if (c.choices.length > 0) { text += c.choices[0].text; chunks++; finish = c.choices[0].finish_reason ?? finish }
        if (c.usage != null) usage = c.usage
      }
      assert.ok(chunks >= 2, `chunks ${chunks}`)
      assert.ok(finish === 'stop' || finish === 'length')
      assert.ok(usage.completion_tokens >= 1 && usage.completion_tokens <= 10)
      assert.equal(typeof text, 'string')
    })

    it('chat completions, plain and streaming (plain template: the test models have no chat template)', async () => {
      const messages = [{ role: 'system' as const, content: 'You are terse.' }, { role: 'user' as const, content: 'Name a Debian tool.' }]
      const r = await openai.chat.completions.create({ model: 'meshllm', messages, max_tokens: 12, k: 2 } as any) as any
      assert.equal(r.object, 'chat.completion')
      assert.equal(r.choices[0].message.role, 'assistant')
      assert.equal(typeof r.choices[0].message.content, 'string')
      assert.ok(!/^\s/.test(r.choices[0].message.content), 'leading whitespace dropped')
      assert.ok(!r.choices[0].message.content.includes('\nUser:'), 'stops at the next turn')
      // the prompt is the documented plain template
      assert.equal(r.usage.prompt_tokens, tokenizer.encodePrompt('System: You are terse.\nUser: Name a Debian tool.\nAssistant:').length)
      const stream = await openai.chat.completions.create({ model: 'meshtest-c', messages, max_completion_tokens: 8, stream: true })
      let role: string | undefined
      let content = ''
      let finish: string | null = null
      for await (const c of stream) {
        role ??= c.choices[0]?.delta.role
        content += c.choices[0]?.delta.content ?? ''
        finish = c.choices[0]?.finish_reason ?? finish
      }
      assert.equal(role, 'assistant')
      assert.ok(finish === 'stop' || finish === 'length')
      assert.equal(typeof content, 'string')
    })

    it('renders a GGUF chat template through node-llama-cpp (LLaMA-3 Jinja template)', async () => {
      const LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
      const f = ChatFormatter.create(tokenizer, { template: LLAMA3 })
      const out = f.format([{ role: 'user', content: 'hi' }])
      assert.equal(f.kind, 'custom')
      assert.equal(out.tokens[0], 128000, 'BOS')
      assert.ok(out.tokens.includes(128006) && out.tokens.includes(128007), '<|start_header_id|> … <|end_header_id|> special tokens')
      assert.ok(out.tokens.includes(128009), '<|eot_id|> after the user turn')
      assert.equal(ChatFormatter.create(tokenizer).kind, 'plain', 'meshtest-c has no tokenizer.chat_template')
    })

    it('bad input gets OpenAI-shaped errors with the right status; the server keeps serving', async () => {
      const post = async (body: string, path = '/v1/completions'): Promise<{ status: number, json: any, headers: Headers }> => {
        const res = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
        return { status: res.status, json: await res.json(), headers: res.headers }
      }
      const malformed = await post('{"model": "meshllm", "prompt": ')
      assert.equal(malformed.status, 400)
      assert.equal(malformed.json.error.type, 'invalid_request_error')
      assert.equal(malformed.json.error.code, 'invalid_json')
      assert.deepEqual(Object.keys(malformed.json.error).sort(), ['code', 'message', 'param', 'type'])
      await assert.rejects(openai.completions.create({ model: 'gpt-4', prompt: 'x' }), (e: any) => e instanceof OpenAI.BadRequestError && e.code === 'model_not_found' && e.param === 'model')
      await assert.rejects(openai.completions.create({ model: 'meshllm', prompt: 'x', max_tokens: 600 }), (e: any) => e.status === 400 && e.code === 'context_length_exceeded' && e.param === 'max_tokens' && /512/.test(e.message))
      await assert.rejects(openai.chat.completions.create({ model: 'meshllm', messages: [{ role: 'wizard', content: 'x' }] } as any), (e: any) => e.status === 400 && e.param === 'messages[0].role')
      await assert.rejects(openai.completions.create({ model: 'meshllm', prompt: 'x', rule: 'vote' } as any), (e: any) => e.status === 400 && e.code === 'unknown_rule')
      await assert.rejects(openai.completions.create({ model: 'meshllm', prompt: 'x', temperature: 11 }), (e: any) => e.status === 400 && e.param === 'temperature')
      const big = await post(JSON.stringify({ model: 'meshllm', prompt: 'x'.repeat(1100 * 1024) }))
      assert.equal(big.status, 413)
      assert.equal(big.json.error.code, 'request_too_large')
      const textPlain = await fetch(base + '/v1/completions', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"model":"meshllm","prompt":"x"}' })
      assert.equal(textPlain.status, 400)
      assert.equal(((await textPlain.json()) as any).error.code, 'unsupported_media_type')
      await assert.rejects(openai.completions.create({ model: 'meshllm', prompt: 'x', logprobs: 5 }), (e: any) => e.status === 400 && e.code === 'unsupported_parameter' && e.param === 'logprobs')
      // DNS rebinding: a tokenless (loopback) server answers loopback Host names only
      const rebound = await new Promise<number>((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port: api.httpPort, path: '/api/status', headers: { host: 'evil.example:80' } }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject).end()
      })
      assert.equal(rebound, 403)
      const nope = await fetch(base + '/v1/nothing')
      assert.equal(nope.status, 404)
      assert.equal(((await nope.json()) as any).error.code, 'unknown_url')
      assert.equal((await fetch(base + '/v1/completions')).status, 405)
      const ok = await openai.completions.create({ model: 'meshllm', prompt: 'still', max_tokens: 2 })
      assert.ok(ok.usage!.completion_tokens >= 1)
    })
  })

  describe('auth', () => {
    it('a token-bound server refuses a wrong or missing token (401 / UNAUTHENTICATED) and accepts the right one; non-loopback needs a token', async () => {
      const token = 'test-token-0123456789'
      const sec = await startApi({ node, router, governance: gov, grpc: '127.0.0.1:0', http: '127.0.0.1:0', token })
      try {
        const wrong = new OpenAI({ baseURL: `http://127.0.0.1:${sec.httpPort}/v1`, apiKey: 'wrong-token', maxRetries: 0 })
        await assert.rejects(wrong.models.list(), (e: any) => e instanceof OpenAI.AuthenticationError && e.status === 401)
        assert.equal((await fetch(`http://127.0.0.1:${sec.httpPort}/metrics`)).status, 401)
        assert.equal((await fetch(`http://127.0.0.1:${sec.httpPort}/api/tasks`)).status, 401, 'the task table is behind the token too')
        assert.equal((await fetch(`http://127.0.0.1:${sec.httpPort}/healthz`)).status, 200)
        const right = new OpenAI({ baseURL: `http://127.0.0.1:${sec.httpPort}/v1`, apiKey: token, maxRetries: 0 })
        const ids: string[] = []
        for await (const m of right.models.list()) ids.push(m.id)
        assert.ok(ids.includes('meshllm'))
        const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), LOADER_OPTIONS)) as any
        const c2 = new pkg.meshllm.v1.MeshLLM(`127.0.0.1:${sec.grpcPort}`, grpc.credentials.createInsecure())
        await assert.rejects(unary(c2, 'GetGovernanceState', {}), grpcCode(grpc.status.UNAUTHENTICATED))
        const bad = new grpc.Metadata(); bad.set('authorization', 'Bearer nope-nope-nope')
        await assert.rejects(unary(c2, 'GetGovernanceState', {}, bad), grpcCode(grpc.status.UNAUTHENTICATED))
        const good = new grpc.Metadata(); good.set('authorization', `Bearer ${token}`)
        assert.equal((await unary(c2, 'GetGovernanceState', {}, good)).meshId, config.meshId)
        await assert.rejects(unary(c2, 'RegisterExpert', { model: '/nonexistent/model.gguf' }, good), (e: any) => grpcCode(grpc.status.NOT_FOUND)(e) && /model file not found/.test(e.details))
        await assert.rejects(unary(c2, 'RegisterExpert', { model: 'meshtest-c', gpu: 'maybe' }, good), grpcCode(grpc.status.INVALID_ARGUMENT))
        // health checking stays open for probes
        const hpkg = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, LOADER_OPTIONS)) as any
        const health = new hpkg.grpc.health.v1.Health(`127.0.0.1:${sec.grpcPort}`, grpc.credentials.createInsecure())
        assert.equal((await unary(health, 'Check', { service: '' })).status, 'SERVING')
        health.close()
        c2.close()
      } finally {
        await sec.close()
      }
      await assert.rejects(startApi({ node, router, http: '0.0.0.0:0' }), (e: any) => e.name === 'ApiConfigError' && /not a loopback address, without a token/.test(e.message))
      await assert.rejects(startApi({ node, router, grpc: '192.0.2.1:0' }), (e: any) => e.name === 'ApiConfigError' && /--api-token/.test(e.message))
    })
  })

  describe('experts served by the API node', () => {
    it('RegisterExpert loads meshtest-c on the routing node and serves it to the mesh (seen on the DHT, used by another router)', async () => {
      const r = await unary(client, 'RegisterExpert', { model: 'meshtest-c', threads: 1, maxSessions: 2 }, undefined, 60_000)
      assert.equal(r.expert.peerId, node.peerId.toString())
      assert.equal(r.expert.model, 'meshtest-c')
      assert.equal(r.expert.local, true)
      assert.equal(r.expert.maxSlots, 2)
      assert.ok(r.measuredTokensPerSecond > 0)
      await assert.rejects(unary(client, 'RegisterExpert', { model: 'meshtest-a' }), grpcCode(grpc.status.FAILED_PRECONDITION))
      await assert.rejects(unary(client, 'RegisterExpert', { model: '/nonexistent/model.gguf' }), grpcCode(grpc.status.FAILED_PRECONDITION))
      const list = await unary(client, 'ListExperts', { refresh: true })
      const local = list.experts.find((e: any) => e.local)
      assert.equal(local?.peerId, node.peerId.toString(), 'the local record, read back from the DHT')
      assert.equal(list.experts.length, 3)
      // another peer finds it through the DHT and generates with it alone
      const other = await createMeshNode({ listen: [], dhtServer: false })
      await other.start()
      try {
        await connectBootstrap(other, [experts[0].addr])
        await waitFor(async () => (await discoverExperts(other, tokenizer.fingerprint, { signal: AbortSignal.timeout(3_000) })).compatible.some(x => x.peerId.equals(node.peerId)), 15_000, 'the attached expert on the DHT')
        const r2 = await new Router(other, tokenizer).generate('The kernel', { k: 1, maxTokens: 4, experts: [node.peerId.toString()], ignoreEos: true })
        assert.equal(r2.tokens, 4)
        assert.deepEqual(r2.experts, [node.peerId.toString()])
      } finally {
        await other.stop()
      }
    })
  })

  describe('metrics and dashboard', () => {
    it('GET /metrics: Prometheus text from the node\'s own registry', async () => {
      const res = await fetch(base + '/metrics')
      assert.equal(res.status, 200)
      assert.match(res.headers.get('content-type') ?? '', /text\/plain/)
      const text = await res.text()
      assert.ok(metricValue(text, 'meshllm_tokens_generated_total')! >= 12)
      assert.ok(metricValue(text, 'meshllm_generations_total')! >= 2)
      assert.ok(metricValue(text, 'meshllm_tokens_per_second')! > 0)
      assert.ok(metricValue(text, 'meshllm_time_to_first_token_seconds_count')! > 0, 'time to first token observed')
      assert.equal(metricValue(text, 'meshllm_experts_online', { compatible: 'true' }), 2)
      assert.ok(metricValue(text, 'meshllm_expert_step_latency_seconds_count', { expert: byModel.a, model: 'meshtest-a' })! > 0)
      assert.ok(metricValue(text, 'meshllm_expert_bytes_per_token', { expert: byModel.c, model: 'meshtest-c' })! > 0)
      assert.equal(metricValue(text, 'meshllm_expert_open_sessions', { model: 'meshtest-c' }), 0)
      // the expert's slot queue: nothing waits now; its counters are exported (no contention here)
      assert.equal(metricValue(text, 'meshllm_expert_queued_opens'), 0)
      for (const c of ['refused', 'queued', 'borrowed', 'preempted']) assert.ok(metricValue(text, `meshllm_expert_sessions_${c}_total`)! >= 0, c)
      assert.equal(metricValue(text, 'meshllm_governance_halted'), 0)
      assert.equal(metricValue(text, 'meshllm_governance_phase'), 0)
      assert.ok(metricValue(text, 'meshllm_api_errors_total', { api: 'http', kind: 'invalid_argument' })! >= 4)
      assert.ok(metricValue(text, 'meshllm_api_errors_total', { api: 'grpc', kind: 'permission_denied' })! >= 4)
      assert.ok(text.includes('meshllm_process_'), 'process metrics')
    })

    it('the dashboard shows the experts as a graph, streams a generation and highlights the experts that served it (Chromium)', async function () {
      assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: .ci/run installs Debian chromium`)
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
      const errors: string[] = []
      page.on('pageerror', e => { errors.push(e.message) })
      await page.goto(base + '/')
      await page.waitForFunction("document.querySelectorAll('#graph .expert').length >= 3", undefined, { timeout: 15_000 })
      const models = await page.$$eval('#graph .expert', els => els.map(e => e.getAttribute('data-model')).sort())
      assert.deepEqual(models, ['meshtest-a', 'meshtest-c', 'meshtest-c'])
      const peers = await page.$$eval('#graph .expert', els => els.map(e => e.getAttribute('data-peer')))
      assert.ok(peers.includes(byModel.a) && peers.includes(byModel.c))
      await page.fill('#prompt', 'The kernel')
      await page.fill('#max-tokens', '24')
      await page.fill('#k', '2')
      await page.click('#generate')
      await page.waitForSelector('#output[data-done="1"]', { timeout: 30_000 })
      const completion = await page.textContent('#completion')
      assert.ok((completion ?? '').length > 0, 'streamed text')
      await page.waitForFunction("(document.getElementById('graph').getAttribute('data-last-served') || '') !== ''", undefined, { timeout: 5_000 })
      const served = (await page.getAttribute('#graph', 'data-last-served'))!.split(',')
      assert.equal(served.length, 2)
      for (const id of served) assert.ok([byModel.a, byModel.c].includes(id))
      assert.match((await page.textContent('#gen-stats')) ?? '', /tokens in .* s/)
      assert.match((await page.textContent('#gov')) ?? '', /running/)
      await mkdir(ARTIFACTS, { recursive: true })
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true })
      assert.deepEqual(errors, [])
      await page.close()
    })
  })

  describe('governance HALT through the API', () => {
    it('a keyholder-signed HALT via HaltMesh ends in-flight generations; then Generate is FAILED_PRECONDITION and HTTP 409', async () => {
      // the HALT comes once the generation is under way: after its first token
      let firstToken!: () => void
      const started = new Promise<void>(resolve => { firstToken = resolve })
      const inflight = generateStream(client, { prompt: 'The kernel', k: 2, maxTokens: 400, ignoreEos: true }, { onToken: () => firstToken() })
      await started
      const now = Date.now()
      const halt = await createEnvelope({ kind: Kind.HALT, reason: 'api test', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [keys[2]])
      const r = await unary(client, 'HaltMesh', { envelope: halt })
      assert.equal(r.accepted, true)
      assert.equal(r.kind, 'HALT')
      assert.equal(r.version, now)
      assert.equal(r.state.halt.halted, true)
      assert.equal(r.state.halt.reason, 'api test')
      const ended = await inflight
      grpcCode(grpc.status.FAILED_PRECONDITION)(ended.error)
      assert.match(ended.error!.details, /^halted by governance: api test/)
      const after = await generateStream(client, { prompt: 'x', maxTokens: 2 })
      grpcCode(grpc.status.FAILED_PRECONDITION)(after.error)
      assert.equal(after.error!.details, 'halted by governance: api test')
      await assert.rejects(openai.completions.create({ model: 'meshllm', prompt: 'x', max_tokens: 2 }), (e: any) => e.status === 409 && e.type === 'mesh_halted' && e.code === 'mesh_halted' && /halted by governance: api test/.test(e.message))
      await assert.rejects(openai.chat.completions.create({ model: 'meshllm', messages: [{ role: 'user', content: 'x' }], stream: true }), (e: any) => e.status === 409 && /halted by governance: api test/.test(e.message))
      const s = await unary(client, 'GetRouterStatus', {})
      assert.deepEqual({ halted: s.halt.halted, reason: s.halt.reason, version: s.halt.version }, { halted: true, reason: 'api test', version: now })
      const text = await (await fetch(base + '/metrics')).text()
      assert.equal(metricValue(text, 'meshllm_governance_halted'), 1)
      assert.equal(metricValue(text, 'meshllm_governance_version'), now)
      // the kill switch never reports success falsely: the same HALT again is stale, not "accepted"
      await assert.rejects(unary(client, 'HaltMesh', { envelope: halt }), (e: any) => grpcCode(grpc.status.FAILED_PRECONDITION)(e) && /known/.test(e.details))
      await assert.rejects(unary(client, 'RelayGovernanceMessage', { envelope: halt }), grpcCode(grpc.status.FAILED_PRECONDITION))
    })
  })
})
