/**
 * Issue 10 §8: robust by default, everywhere. Real nodes on loopback: two honest expert
 * processes (meshtest-a, meshtest-b), one in-process liar promoting one token
 * (test/helpers/liar-expert.ts), and a routing node that serves --via
 * (/meshllm/generate) and the HTTP and gRPC APIs. Every interface accepts every rule through
 * one validation (src/router/options.ts), the same bad value gives the same error on each,
 * and screening and reputation are on under the default rule whenever K ≥ 3.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { multiaddr } from '@multiformats/multiaddr'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { generateService, generateVia } from '../../src/router/generate-service.js'
import { startApi, protoPath, LOADER_OPTIONS, type ApiHandle } from '../../src/api/index.js'
import { startLiar, type LiarExpert } from '../helpers/liar-expert.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))
const PROMPT = 'The kernel'
const PROMOTED = 1000

type Client = grpc.Client & Record<string, any>

function generateStream (client: Client, req: object): Promise<{ summary?: any, error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    let summary: any
    const call = client.Generate(req, new grpc.Metadata(), { deadline: Date.now() + 60_000 })
    call.on('data', (ev: any) => { if (ev.summary != null) summary = ev.summary })
    call.on('error', (error: grpc.ServiceError) => { resolve({ summary, error }) })
    call.on('end', () => { resolve({ summary }) })
  })
}

function peerOf (addr: string): string {
  return addr.split('/p2p/')[1]
}

describe('adversarial: robust by default, on every interface', function () {
  this.timeout(120_000)
  let a: SpawnedExpert, b: SpawnedExpert
  let liar: LiarExpert
  let routing: MeshNode
  let client: MeshNode
  let tokenizer: RouterTokenizer
  let router: Router
  let api: ApiHandle
  let grpcClient: Client
  let base: string
  const honest = (): string[] => [peerOf(a.addr), peerOf(b.addr)]
  const via = (): ReturnType<typeof multiaddr> => multiaddr(routing.getMultiaddrs()[0].toString())

  before(async function () {
    this.timeout(120_000)
    a = await spawnExpert('meshtest-a', ['--max-sessions', '8'])
    b = await spawnExpert('meshtest-b', ['--bootstrap', a.addr, '--max-sessions', '8'])
    liar = await startLiar('promote', { bootstrap: [a.addr], promote: PROMOTED, seed: 11 })
    tokenizer = await RouterTokenizer.load('meshtest-c')
    // the routing node: --via (/meshllm/generate), HTTP and gRPC, one router
    routing = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'], dhtServer: false, services: { generate: generateService({ router: () => router }) } })
    await routing.start()
    await connectBootstrap(routing, [a.addr])
    router = new Router(routing, tokenizer, { requestTimeoutMs: 10_000 })
    await waitFor(async () => {
      const ids = (await router.experts(true)).compatible.map(r => r.peerId.toString())
      return [...honest(), liar.id].every(id => ids.includes(id))
    }, 30_000, 'the DHT to list both honest experts and the liar')
    api = await startApi({ node: routing, router, grpc: '127.0.0.1:0', http: '127.0.0.1:0' })
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), LOADER_OPTIONS)) as any
    grpcClient = new pkg.meshllm.v1.MeshLLM(`127.0.0.1:${api.grpcPort}`, grpc.credentials.createInsecure())
    base = `http://127.0.0.1:${api.httpPort}`
    client = await createMeshNode({ listen: [], dhtServer: false })
    await client.start()
  })

  after(async function () {
    this.timeout(30_000)
    grpcClient?.close()
    await api?.close()
    await client?.stop()
    await routing?.stop()
    await liar?.stop().catch(() => {})
    await tokenizer?.close()
    await Promise.all([a, b].filter(e => e != null).map(stopExpert))
  })

  const httpCompletion = async (body: object): Promise<{ status: number, json: any }> => {
    const res = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'meshllm', prompt: PROMPT, ...body }) })
    return { status: res.status, json: await res.json() }
  }

  it("HTTP, gRPC and --via accept the robust rules 'median' and 'trimmed'", async () => {
    for (const rule of ['median', 'trimmed'] as const) {
      const h = await httpCompletion({ max_tokens: 3, temperature: 0, rule, k: 2 })
      assert.equal(h.status, 200, `HTTP ${rule}: ${JSON.stringify(h.json)}`)
      assert.equal(h.json.usage.completion_tokens, 3)
      const g = await generateStream(grpcClient, { prompt: PROMPT, maxTokens: 3, temperature: 0, rule, k: 2, ignoreEos: true })
      assert.equal(g.error, undefined, `gRPC ${rule}: ${g.error?.details}`)
      assert.equal(g.summary?.tokens, 3)
      const v = await generateVia(client, via(), PROMPT, { k: 2, maxTokens: 3, temperature: 0, rule })
      assert.equal(v.tokens, 3)
    }
  })

  it('a lying expert is screened and judged under the default rule (mixture) at K = 3, with no option asking for it', async () => {
    const r = await router.generate(PROMPT, { k: 3, temperature: 0, seed: 1, maxTokens: 30, ignoreEos: true, experts: [...honest(), liar.id] })
    assert.equal(r.tokens, 30)
    const rep = router.reputation.get(liar.id)
    assert.ok(rep.screened > 0, `the liar's frames were screened out of ${rep.screened} steps`)
    assert.ok(rep.frames > 0 && rep.disagreement > 0.5, `the liar is judged (D = ${rep.disagreement.toFixed(3)})`)
    assert.ok(honest().every(id => router.reputation.get(id).bans === 0), 'no honest expert banned')
    // the promoted token (90 % of the liar's mass) never won a step
    let promoted = 0
    await router.generate(PROMPT, { k: 3, temperature: 0, seed: 1, maxTokens: 10, ignoreEos: true, experts: [...honest(), liar.id], onToken: t => { if (t.token === PROMOTED) promoted++ } })
    assert.equal(promoted, 0)
  })

  it('the same out-of-range value gets the same error, by the same validation, on the CLI, HTTP, gRPC and --via', async () => {
    // temperature 11: outside [0, 10] everywhere (HTTP used to allow [0, 2], the others [0, 10])
    const cli = await new Promise<{ code: number | null, stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'generate', '--bootstrap', a.addr, '--temperature', '11', PROMPT], { stdio: ['ignore', 'ignore', 'pipe'] })
      let stderr = ''
      child.stderr.on('data', (d) => { stderr += String(d) })
      child.once('exit', (code) => { resolve({ code, stderr }) })
    })
    assert.equal(cli.code, 2, `the CLI exits with the usage code: ${cli.stderr}`)
    const cliMessage = cli.stderr.trim().replace(/^meshllm: /, '')

    const h = await httpCompletion({ temperature: 11, max_tokens: 2 })
    assert.equal(h.status, 400)
    assert.equal(h.json.error.param, 'temperature')

    const g = await generateStream(grpcClient, { prompt: PROMPT, temperature: 11, maxTokens: 2 })
    assert.equal(g.error?.code, grpc.status.INVALID_ARGUMENT)

    const v = await generateVia(client, via(), PROMPT, { k: 2, maxTokens: 2, temperature: 11 }).then(() => undefined, (err: any) => err)
    assert.equal(v?.remoteName, 'InvalidGenerateOptionError')

    assert.ok(cliMessage.length > 0)
    assert.deepEqual([h.json.error.message, g.error?.details, v.message], [cliMessage, cliMessage, cliMessage], 'one validation, one message')
  })
})
