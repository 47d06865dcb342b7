/**
 * Hostile networks against the client APIs (issue 10, §9 "Tokens"): the API token never
 * travels in argv (`ps` shows it to every user) and comes from a mode-600 file or the
 * environment; an exposed gRPC/HTTP API speaks TLS (or is explicitly behind a TLS reverse
 * proxy). Real servers on loopback with a self-signed certificate made here with the openssl
 * CLI, driven by real clients: node:https with that certificate as the only CA, and
 * @grpc/grpc-js with ssl channel credentials. Refusals are checked by HTTP status, gRPC
 * status code, error class name and exit code, never by message text.
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request as httpsRequest } from 'node:https'
import { request as httpRequest } from 'node:http'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { protoPath as healthProtoPath } from 'grpc-health-check'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { startApi, validateApiOptions, resolveApiToken, readTlsFiles, protoPath, LOADER_OPTIONS, type ApiHandle, type TlsOptions } from '../../src/api/index.js'
import { EXIT } from '../../src/cli/main.js'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))
const TOKEN = 'adversarial-api-token-0123'

/** a self-signed certificate for 127.0.0.1 and localhost, valid one day (test-only key) */
function selfSigned (dir: string, name: string): { certFile: string, keyFile: string, tls: TlsOptions } {
  const certFile = join(dir, `${name}.crt`)
  const keyFile = join(dir, `${name}.key`)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' })
  chmodSync(keyFile, 0o600)
  return { certFile, keyFile, tls: { cert: readFileSync(certFile), key: readFileSync(keyFile) } }
}

function httpsGet (port: number, path: string, ca: Buffer, token?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = token != null ? { authorization: `Bearer ${token}` } : {}
    httpsRequest({ host: '127.0.0.1', port, path, ca, headers }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject).end()
  })
}

type Client = grpc.Client & Record<string, any>

function unary (client: Client, method: string, req: object, token?: string): Promise<any> {
  const md = new grpc.Metadata()
  if (token != null) md.set('authorization', `Bearer ${token}`)
  return new Promise((resolve, reject) => {
    client[method](req, md, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res: any) => { if (err != null) reject(err); else resolve(res) })
  })
}

const grpcCode = (code: grpc.status) => (e: any): boolean => { assert.equal(e.code, code, `expected ${grpc.status[code]}, got ${grpc.status[e.code]}`); return true }
const named = (name: string) => (e: any): boolean => { assert.equal(e?.name, name); return true }

/** `meshllm join …` in a child process: exit code and stderr */
function cli (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MESHLLM_API_TOKEN: '', ...env } })
    let stderr = ''
    child.stderr.on('data', (d) => { stderr += String(d) })
    child.once('exit', (code) => { resolve({ code, stderr }) })
  })
}

describe('adversarial: API tokens and TLS', function () {
  this.timeout(60_000)
  let dir: string
  let pki: ReturnType<typeof selfSigned>
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let router: Router
  let api: ApiHandle

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'meshllm-api-auth-'))
    pki = selfSigned(dir, 'server')
    node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    tokenizer = await RouterTokenizer.load('meshtest-c')
    router = new Router(node, tokenizer)
    api = await startApi({ node, router, grpc: '127.0.0.1:0', http: '127.0.0.1:0', token: TOKEN, tls: pki.tls })
  })

  after(async function () {
    await api?.close()
    await tokenizer?.close()
    await node?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it('a non-loopback bind needs a token and TLS, or the explicit --insecure-behind-proxy opt-in (InsecureBindError); loopback stays as it was', () => {
    for (const bind of [{ http: '0.0.0.0:8080' }, { grpc: '192.0.2.1:50051' }, { http: '[::]:8080' }, { grpc: 'mesh.example.org:443' }]) {
      assert.throws(() => validateApiOptions({ ...bind, token: TOKEN }), named('InsecureBindError'))
      validateApiOptions({ ...bind, token: TOKEN, tls: pki.tls })
      validateApiOptions({ ...bind, token: TOKEN, insecureBehindProxy: true })
      // TLS does not replace the token
      assert.throws(() => validateApiOptions({ ...bind, tls: pki.tls }), named('ApiConfigError'))
    }
    validateApiOptions({ http: '127.0.0.1:8080', grpc: '[::1]:50051' })
    validateApiOptions({ http: 'localhost:8080', token: TOKEN })
    // a key that is not the certificate's is refused before anything binds
    const other = selfSigned(dir, 'other')
    assert.throws(() => validateApiOptions({ http: '0.0.0.0:8080', token: TOKEN, tls: { cert: pki.tls.cert, key: other.tls.key } }), named('ApiTlsError'))
    assert.throws(() => readTlsFiles(pki.certFile, undefined), named('ApiTlsError'))
    assert.throws(() => readTlsFiles(pki.certFile, join(dir, 'missing.key')), named('ApiTlsError'))
    assert.deepEqual(readTlsFiles(pki.certFile, pki.keyFile), pki.tls)
  })

  it('the token comes from a mode-600 file (first line, trimmed) or MESHLLM_API_TOKEN; --api-token, a missing, empty or group/other-readable file are refused (ApiTokenError)', () => {
    const file = join(dir, 'token')
    writeFileSync(file, `  ${TOKEN}  \nsecond line\n`, { mode: 0o600 })
    assert.equal(resolveApiToken({ file, env: {} }), TOKEN)
    assert.equal(resolveApiToken({ file, env: { MESHLLM_API_TOKEN: 'from-the-environment' } }), TOKEN, 'the file, named on the command line, wins')
    assert.equal(resolveApiToken({ env: { MESHLLM_API_TOKEN: 'from-the-environment' } }), 'from-the-environment')
    assert.equal(resolveApiToken({ env: { MESHLLM_API_TOKEN: '' } }), undefined)
    assert.throws(() => resolveApiToken({ flag: TOKEN, env: {} }), named('ApiTokenError'))
    assert.throws(() => resolveApiToken({ file: join(dir, 'no-such-token'), env: {} }), named('ApiTokenError'))
    for (const [content, mode] of [['', 0o600], ['   \nsecond line\n', 0o600], [TOKEN, 0o644], [TOKEN, 0o640], [TOKEN, 0o620]] as const) {
      rmSync(file)
      writeFileSync(file, content)
      chmodSync(file, mode)
      assert.throws(() => resolveApiToken({ file, env: {} }), named('ApiTokenError'), `content ${JSON.stringify(content)}, mode ${mode.toString(8)}`)
    }
    assert.throws(() => resolveApiToken({ file: dir, env: {} }), named('ApiTokenError'), 'a directory')
  })

  it('HTTPS with the certificate as the only CA: missing or wrong token 401, right token 200; a clear-text client gets no answer', async () => {
    const port = api.httpPort!
    assert.equal(await httpsGet(port, '/metrics', pki.tls.cert as Buffer), 401)
    assert.equal(await httpsGet(port, '/metrics', pki.tls.cert as Buffer, 'wrong-token-0123456789'), 401)
    assert.equal(await httpsGet(port, '/v1/models', pki.tls.cert as Buffer, TOKEN.slice(0, -1)), 401)
    assert.equal(await httpsGet(port, '/metrics', pki.tls.cert as Buffer, TOKEN), 200)
    assert.equal(await httpsGet(port, '/healthz', pki.tls.cert as Buffer), 200, 'probes stay open')
    // a certificate the client does not trust is refused by the client: the server really presents ours
    const other = selfSigned(dir, 'untrusted')
    await assert.rejects(httpsGet(port, '/healthz', other.tls.cert as Buffer))
    await assert.rejects(new Promise((resolve, reject) => {
      httpRequest({ host: '127.0.0.1', port, path: '/healthz' }, (res) => { res.resume(); resolve(res.statusCode) }).on('error', reject).end()
    }))
  })

  it('gRPC over TLS with ssl credentials: missing or wrong token UNAUTHENTICATED, right token OK, health open; an insecure channel gets UNAVAILABLE', async () => {
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), LOADER_OPTIONS)) as any
    const hpkg = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, LOADER_OPTIONS)) as any
    const addr = `127.0.0.1:${api.grpcPort!}`
    // the certificate names 127.0.0.1 and localhost; TLS SNI takes only names
    const sni = { 'grpc.ssl_target_name_override': 'localhost' }
    const client: Client = new pkg.meshllm.v1.MeshLLM(addr, grpc.credentials.createSsl(pki.tls.cert as Buffer), sni)
    const health: Client = new hpkg.grpc.health.v1.Health(addr, grpc.credentials.createSsl(pki.tls.cert as Buffer), sni)
    const plain: Client = new pkg.meshllm.v1.MeshLLM(addr, grpc.credentials.createInsecure())
    try {
      await assert.rejects(unary(client, 'ListTasks', {}), grpcCode(grpc.status.UNAUTHENTICATED))
      await assert.rejects(unary(client, 'ListTasks', {}, 'wrong-token-0123456789'), grpcCode(grpc.status.UNAUTHENTICATED))
      assert.deepEqual((await unary(client, 'ListTasks', {}, TOKEN)).tasks ?? [], [])
      assert.equal((await unary(health, 'Check', { service: '' })).status, 'SERVING')
      await assert.rejects(unary(plain, 'ListTasks', {}, TOKEN), grpcCode(grpc.status.UNAVAILABLE))
    } finally {
      client.close(); health.close(); plain.close()
    }
  })

  it('meshllm join exits 2 before loading a model on --api-token or a clear-text public bind, and accepts a token file with TLS', async () => {
    // the model does not exist: reaching the model lookup (exit 6) means the API options were accepted
    const model = ['join', '--model', join(dir, 'no-such-model.gguf')]
    const good = join(dir, 'good-token')
    writeFileSync(good, TOKEN + '\n', { mode: 0o600 })
    const cases: Array<[string[], Record<string, string>, number]> = [
      [['--http', '127.0.0.1:0', '--api-token', TOKEN], {}, EXIT.USAGE],
      [['--http', '0.0.0.0:0'], { MESHLLM_API_TOKEN: TOKEN }, EXIT.USAGE],
      [['--http', '0.0.0.0:0', '--grpc', '0.0.0.0:0', '--api-token-file', good, '--tls-cert', pki.certFile, '--tls-key', pki.keyFile], {}, EXIT.MODEL_NOT_FOUND]
    ]
    const results = await Promise.all(cases.map(async ([args, env]) => await cli([...model, ...args], env)))
    results.forEach((r, i) => {
      const [args, env, code] = cases[i]
      assert.equal(r.code, code, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`)
      if (code === EXIT.USAGE) assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`)
    })
  })
})
