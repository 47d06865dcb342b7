/**
 * HTTP server (node:http): the OpenAI-compatible API (/v1/models, /v1/completions,
 * /v1/chat/completions, streaming as server-sent events), Prometheus /metrics, the dashboard
 * (/ and /dashboard) with its JSON and event endpoints (/api/*), and /healthz.
 * Reference: docs/api.md.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { ApiError, HTTP_ERROR, invalid, openAiErrorBody, toApiError } from './errors.js'
import { errorMessage } from '../util/errors.js'
import { bearer, tokenMatches, type TlsOptions } from './auth.js'
import type { MeshApi } from './service.js'
import type { PreparedGeneration } from './types.js'
import type { ChatMessage } from './chat.js'
import type { GenerateResult } from '../router/router.js'
import { DASHBOARD_HTML } from './dashboard.js'

export interface HttpServerOptions {
  host: string
  port: number
  token?: string
  /** PEM cert + key: serve HTTPS */
  tls?: TlsOptions
  /** request body limit (default 1 MiB) */
  maxBodyBytes?: number
}

export interface HttpApiServer {
  port: number
  close: () => Promise<void>
}

const OPEN_PATHS = new Set(['/', '/dashboard', '/healthz', '/favicon.ico'])

/** the response headers of a server-sent event stream */
const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' }

/** the routes the request counter names (any other path is one series, "other") */
const ROUTES = new Set([
  '/', '/dashboard', '/healthz', '/metrics', '/api/status', '/api/experts', '/api/governance', '/api/tasks', '/api/dashboard', '/api/events',
  '/v1/models', '/v1/completions', '/v1/chat/completions'
])

export async function startHttpServer (api: MeshApi, o: HttpServerOptions): Promise<HttpApiServer> {
  const maxBody = o.maxBodyBytes ?? 1024 * 1024
  const sse = new Set<ServerResponse>()
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((err) => {
      const e = toApiError(err)
      if (!res.headersSent) sendError(res, e)
      else res.destroy()
    })
  }
  const server = o.tls != null ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, onRequest) : createServer(onRequest)
  server.headersTimeout = 30_000
  server.requestTimeout = 0 // generations stream for a long time; the API has its own limit
  server.keepAliveTimeout = 5_000

  const sendError = (res: ServerResponse, e: ApiError): void => {
    api.metrics.error('http', e.kind)
    const { status } = HTTP_ERROR[e.kind]
    const headers: Record<string, string> = {}
    // the OpenAI SDK retries 408/409/429/5xx unless told not to: a halted or empty mesh does not heal in a second
    if (status < 500 || status === 503 || status === 504) headers['x-should-retry'] = 'false'
    if (status === 401) headers['www-authenticate'] = 'Bearer'
    if (status === 413) headers.connection = 'close'
    sendJson(res, status, openAiErrorBody(e), headers)
  }

  async function handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const path = url.pathname.replace(/\/+$/, '') || '/'
    const method = req.method ?? 'GET'
    api.metrics.request('http', `${method} ${routeName(path)}`)
    if (o.token == null && !hostAllowed(req.headers.host)) {
      // without a token the server is bound to loopback: refuse other Host names (DNS rebinding)
      req.resume()
      const host = String(req.headers.host).slice(0, 64)
      sendError(res, new ApiError('permission_denied', `Host "${host}" is not a loopback name: without an API token this server only answers requests for ` +
        '127.0.0.1, [::1] or localhost', null, 'bad_host'))
      return
    }
    if (o.token != null && !OPEN_PATHS.has(path)) {
      const given = bearer(req.headers.authorization)
      if (given == null || !tokenMatches(given, o.token)) {
        req.resume()
        const message = given == null ? 'missing "authorization: Bearer <token>" header' : 'invalid API token'
        sendError(res, new ApiError('unauthenticated', message, null, 'invalid_api_key'))
        return
      }
    }
    const allow = (...methods: string[]): boolean => {
      if (methods.includes(method)) return true
      req.resume()
      api.metrics.error('http', 'invalid_argument')
      const e = new ApiError('invalid_argument', `${method} is not allowed on ${path}: use ${methods.join(' or ')}`, null, 'method_not_allowed')
      sendJson(res, 405, openAiErrorBody(e), { allow: methods.join(', '), 'x-should-retry': 'false' })
      return false
    }
    switch (path) {
      case '/':
      case '/dashboard':
        if (!allow('GET', 'HEAD')) return
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'no-store',
          'content-security-policy': "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:"
        })
        res.end(method === 'HEAD' ? undefined : DASHBOARD_HTML)
        return
      case '/favicon.ico':
        res.writeHead(204).end()
        return
      case '/healthz':
        sendJson(res, 200, { status: 'ok', halted: api.governance.haltState().halted })
        return
      case '/metrics':
        if (!allow('GET')) return
        res.writeHead(200, { 'content-type': api.metrics.contentType })
        res.end(await api.metrics.text())
        return
      case '/api/status':
        if (!allow('GET')) return
        sendJson(res, 200, await api.status.routerStatus(url.searchParams.get('refresh') === '1', url.searchParams.get('cached') === '1'))
        return
      case '/api/experts':
        if (!allow('GET')) return
        sendJson(res, 200, { experts: await api.status.listExperts(url.searchParams.get('refresh') === '1', true) })
        return
      case '/api/governance':
        if (!allow('GET')) return
        sendJson(res, 200, api.governance.state())
        return
      case '/api/tasks': {
        // ListTasks over HTTP: the node's task table, the agent's tasks and the submitted ones
        if (!allow('GET')) return
        const q = url.searchParams
        sendJson(res, 200, api.tasks.list({
          status: q.get('status') ?? undefined,
          limit: queryInt(q.get('limit'), 'limit'),
          offset: queryInt(q.get('offset'), 'offset')
        }))
        return
      }
      case '/api/dashboard':
        if (!allow('GET')) return
        sendJson(res, 200, await api.status.dashboard())
        return
      case '/api/events':
        if (!allow('GET')) return
        events(req, res)
        return
      case '/v1/models':
        if (!allow('GET')) return
        sendJson(res, 200, { object: 'list', data: (await api.generation.modelIds()).map(id => modelObject(api, id)) })
        return
      case '/v1/completions':
      case '/v1/chat/completions': {
        if (!allow('POST')) return
        if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) {
          // also keeps browsers' cross-site "simple" form posts out
          req.resume()
          throw invalid('the request body must be JSON with "content-type: application/json"', null, 'unsupported_media_type')
        }
        const body = await readJson(req, maxBody)
        await completions(req, res, body, path === '/v1/chat/completions')
        return
      }
      default:
        if (path.startsWith('/v1/models/')) {
          if (!allow('GET')) return
          const id = decodeURIComponent(path.slice('/v1/models/'.length))
          if (!(await api.generation.modelIds()).includes(id)) {
            throw new ApiError('not_found', `The model \`${id.slice(0, 128)}\` does not exist on this mesh`, 'model', 'model_not_found')
          }
          sendJson(res, 200, modelObject(api, id))
          return
        }
        req.resume()
        throw new ApiError('not_found', `no route ${method} ${path}`, null, 'unknown_url')
    }
  }

  function events (req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, SSE_HEADERS)
    res.flushHeaders()
    sse.add(res)
    const send = (event: string, data: unknown): void => { if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`) }
    const snapshot = (): void => { api.status.dashboard().then(s => { send('snapshot', s) }, () => {}) }
    const onToken = (t: unknown): void => { send('token', t) }
    const onGeneration = (g: unknown): void => { send('generation', g) }
    const onGovernance = (g: unknown): void => { send('governance', g); snapshot() }
    api.events.on('token', onToken)
    api.events.on('generation', onGeneration)
    api.events.on('governance', onGovernance)
    snapshot()
    const timer = setInterval(snapshot, 2_000)
    const cleanup = (): void => {
      clearInterval(timer)
      api.events.off('token', onToken)
      api.events.off('generation', onGeneration)
      api.events.off('governance', onGovernance)
      sse.delete(res)
    }
    req.on('close', cleanup)
    res.on('close', cleanup)
  }

  async function completions (req: IncomingMessage, res: ServerResponse, body: JsonObject, chat: boolean): Promise<void> {
    const model = body.model
    if (typeof model !== 'string' || model.length === 0) throw invalid('you must provide a model parameter', 'model', 'missing_required_parameter')
    const stream = optBool(body.stream, 'stream') ?? false
    const includeUsage = stream && isObject(body.stream_options) && body.stream_options.include_usage === true
    if (body.n != null && body.n !== 1) throw invalid('only n = 1 is supported', 'n')
    rejectUnsupported(body)
    const maxName = chat && body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens'
    // JSON's null is "absent"; types, ranges and rules are checked by the schema every
    // interface shares (src/router/options.ts, through GenerationApi.prepare)
    const opt = (v: unknown): unknown => v === null ? undefined : v
    // stop: a string or an array of strings (OpenAI); the elements are the schema's to check
    let stop: unknown[] = []
    if (typeof body.stop === 'string') stop = [body.stop]
    else if (Array.isArray(body.stop)) stop = body.stop
    else if (body.stop != null) throw invalid('stop must be a string or an array of strings', 'stop')
    const experts = await api.generation.expertsForModel(model)

    let prompt: string | number[]
    let trimLeading = false
    if (chat) {
      const f = api.generation.formatChat(parseMessages(body.messages))
      prompt = f.tokens
      stop = [...stop, ...f.stop.filter(s => !stop.includes(s))]
      trimLeading = f.trimLeading
    } else {
      prompt = parsePrompt(body.prompt)
    }
    const prep: PreparedGeneration = await api.generation.prepare({
      prompt,
      k: opt(body.k),
      maxTokens: opt(body[maxName]),
      temperature: opt(body.temperature),
      topK: opt(body.top_k),
      topP: opt(body.top_p),
      seed: opt(body.seed),
      stop,
      rule: opt(body.rule),
      experts,
      defaultMaxTokens: chat ? 256 : 16,
      names: { maxTokens: maxName, prompt: chat ? 'messages' : 'prompt' }
    })

    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`
    const created = Math.floor(Date.now() / 1000)
    const ctrl = new AbortController()
    res.on('close', () => { if (!res.writableFinished) ctrl.abort(new ApiError('deadline_exceeded', 'client disconnected', null, 'cancelled')) })
    let leading = trimLeading
    const clean = (piece: string): string => {
      if (!leading) return piece
      const t = piece.replace(/^\s+/, '')
      if (t.length > 0) leading = false
      return t
    }

    if (!stream) {
      const result = await api.generation.generate(prep, { signal: ctrl.signal })
      const text = trimLeading ? result.text.replace(/^\s+/, '') : result.text
      const finish = finishReason(result)
      sendJson(res, 200, {
        id,
        object: chat ? 'chat.completion' : 'text_completion',
        created,
        model,
        system_fingerprint: null,
        choices: [chat
          ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finish }
          : { index: 0, text, logprobs: null, finish_reason: finish }],
        usage: usage(prep, result),
        meshllm: meshExtras(result)
      })
      return
    }

    // streaming: headers go out with the first chunk, so errors before any token keep their HTTP status
    let started = false
    const write = (data: unknown): void => {
      if (!started) {
        started = true
        res.writeHead(200, SSE_HEADERS)
      }
      if (!res.writableEnded) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`)
    }
    const chunk = (delta: string | null, finish: string | null, first = false): Record<string, unknown> => ({
      id,
      object: chat ? 'chat.completion.chunk' : 'text_completion',
      created,
      model,
      system_fingerprint: null,
      choices: [chat
        ? {
            index: 0,
            delta: finish != null ? {} : first ? { role: 'assistant', content: delta ?? '' } : { content: delta },
            logprobs: null,
            finish_reason: finish
          }
        : { index: 0, text: delta ?? '', logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {})
    })
    try {
      const result = await api.generation.generate(prep, {
        signal: ctrl.signal,
        onToken: (t) => {
          if (chat && !started) write(chunk('', null, true))
          const piece = clean(t.text)
          if (piece.length > 0) write(chunk(piece, null))
        }
      })
      if (chat && !started) write(chunk('', null, true))
      write(chunk(chat ? null : '', finishReason(result)))
      if (includeUsage) {
        const object = chat ? 'chat.completion.chunk' : 'text_completion'
        write({ id, object, created, model, choices: [], usage: usage(prep, result), meshllm: meshExtras(result) })
      }
      write('[DONE]')
      res.end()
    } catch (err) {
      const e = toApiError(err)
      if (!started) throw e
      api.metrics.error('http', e.kind)
      write(openAiErrorBody(e))
      res.end()
    }
  }

  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port, o.host, () => { server.off('error', reject); resolve((server.address() as AddressInfo).port) })
  })
  return {
    port,
    close: async () => {
      for (const r of sse) r.end()
      sse.clear()
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { server.closeAllConnections(); resolve() }, 2_000)
        server.close(() => { clearTimeout(t); resolve() })
        server.closeIdleConnections()
      })
    }
  }
}

function routeName (path: string): string {
  if (path.startsWith('/v1/models/')) return '/v1/models/:id'
  return ROUTES.has(path) ? path : 'other'
}

/** a non-negative integer query parameter (absent: undefined) */
function queryInt (v: string | null, name: string): number | undefined {
  if (v == null || v === '') return undefined
  if (!/^\d{1,9}$/.test(v)) throw invalid(`${name} must be a non-negative integer`, name)
  return Number(v)
}

function sendJson (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

/** a JSON object as parsed: every value unchecked */
type JsonObject = Record<string, unknown>

/** a non-null object (a JSON object or array) whose fields may be read */
function isObject (v: unknown): v is JsonObject {
  return v != null && typeof v === 'object'
}

async function readJson (req: IncomingMessage, limit: number): Promise<JsonObject> {
  const declared = Number(req.headers['content-length'] ?? NaN)
  const tooLarge = (): ApiError => new ApiError('payload_too_large', `request body exceeds ${limit} bytes`, null, 'request_too_large')
  if (Number.isFinite(declared) && declared > limit) { req.resume(); throw tooLarge() }
  const chunks: Buffer[] = []
  let size = 0
  await new Promise<void>((resolve, reject) => {
    let failed = false
    const timer = setTimeout(() => { failed = true; reject(invalid('the request body did not arrive within 30 s', null, 'body_timeout')) }, 30_000)
    req.on('data', (c: Buffer) => {
      if (failed) return
      size += c.length
      if (size > limit) { failed = true; clearTimeout(timer); reject(tooLarge()); return }
      chunks.push(c)
    })
    req.on('end', () => { clearTimeout(timer); if (!failed) resolve() })
    req.on('error', (err) => { clearTimeout(timer); reject(err) })
  })
  const text = Buffer.concat(chunks).toString('utf8')
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (err) {
    throw invalid(`We could not parse the JSON body of your request: ${errorMessage(err)}`, null, 'invalid_json')
  }
  if (!isObject(body) || Array.isArray(body)) throw invalid('the request body must be a JSON object', null, 'invalid_json')
  return body
}

/** parameters we cannot honour are refused rather than silently ignored (their defaults are fine) */
function rejectUnsupported (b: JsonObject): void {
  const no = (param: string, what: string): never => { throw invalid(`${what} is not supported by meshllm`, param, 'unsupported_parameter') }
  if (b.logprobs != null && b.logprobs !== false && b.logprobs !== 0) no('logprobs', 'logprobs')
  if (b.top_logprobs != null && b.top_logprobs !== 0) no('top_logprobs', 'top_logprobs')
  if (b.echo === true) no('echo', 'echo')
  if (b.best_of != null && b.best_of !== 1) no('best_of', 'best_of > 1')
  if (typeof b.suffix === 'string' && b.suffix !== '') no('suffix', 'suffix (insertion)')
  if (Array.isArray(b.tools) && b.tools.length > 0) no('tools', 'tool calling')
  if (Array.isArray(b.functions) && b.functions.length > 0) no('functions', 'function calling')
  if (b.response_format != null && (b.response_format as { type?: unknown }).type !== 'text') no('response_format', 'response_format other than text')
  for (const p of ['presence_penalty', 'frequency_penalty']) if (b[p] != null && b[p] !== 0) no(p, p)
  if (b.logit_bias != null && Object.keys(b.logit_bias as object).length > 0) no('logit_bias', 'logit_bias')
}

function hostAllowed (host: string | undefined): boolean {
  if (host == null) return true // HTTP/1.0 clients
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '')
  return name === 'localhost' || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name)
}

function optBool (v: unknown, name: string): boolean | undefined {
  if (v == null) return undefined
  if (typeof v !== 'boolean') throw invalid(`${name} must be a boolean`, name)
  return v
}

function parsePrompt (p: unknown): string | number[] {
  if (typeof p === 'string') return p
  if (Array.isArray(p)) {
    if (p.length === 1 && typeof p[0] === 'string') return p[0]
    if (p.length > 0 && p.every(x => typeof x === 'number')) return p as number[]
    if (p.length === 1 && Array.isArray(p[0]) && p[0].every((x: unknown) => typeof x === 'number')) return p[0] as number[]
    if (p.length > 1) throw invalid('one prompt per request (batches are not supported)', 'prompt')
  }
  throw invalid('prompt must be a string, a one-element array of strings, or an array of token ids', 'prompt')
}

const ROLES: ReadonlySet<unknown> = new Set<ChatMessage['role']>(['system', 'developer', 'user', 'assistant'])

function isRole (v: unknown): v is ChatMessage['role'] {
  return ROLES.has(v)
}

/** an OpenAI content part of type text */
function isTextPart (p: unknown): p is { type: 'text', text: string } {
  return (p as { type?: unknown } | null | undefined)?.type === 'text' && typeof (p as { text?: unknown }).text === 'string'
}

function parseMessages (m: unknown): ChatMessage[] {
  if (!Array.isArray(m) || m.length === 0) throw invalid('messages must be a non-empty array', 'messages')
  if (m.length > 1024) throw invalid('at most 1024 messages', 'messages')
  return m.map((x: unknown, i: number) => {
    if (!isObject(x)) throw invalid(`messages[${i}] must be an object`, `messages[${i}]`)
    if (!isRole(x.role)) throw invalid(`messages[${i}].role must be one of system, developer, user, assistant`, `messages[${i}].role`)
    let content: string
    if (typeof x.content === 'string') content = x.content
    else if (Array.isArray(x.content) && x.content.every(isTextPart)) content = x.content.map(p => p.text).join('')
    else if (x.content == null && x.role === 'assistant') content = ''
    else throw invalid(`messages[${i}].content must be a string or an array of text parts`, `messages[${i}].content`)
    return { role: x.role, content }
  })
}

function finishReason (r: GenerateResult): 'stop' | 'length' {
  return r.finishReason === 'length' || r.finishReason === 'context' ? 'length' : 'stop'
}

function usage (prep: PreparedGeneration, r: GenerateResult): Record<string, number> {
  return { prompt_tokens: prep.promptTokens, completion_tokens: r.tokens, total_tokens: prep.promptTokens + r.tokens }
}

function meshExtras (r: GenerateResult): Record<string, unknown> {
  return {
    k: r.k,
    effective_k: r.effectiveK,
    experts: r.experts,
    finish_reason: r.finishReason,
    tokens_per_second: r.tokensPerSecond,
    elapsed_ms: r.elapsedMs,
    ...(r.ttftMs !== undefined ? { ttft_ms: r.ttftMs } : {}),
    bytes_per_expert_token: r.bytesPerExpertToken,
    warnings: r.warnings
  }
}

function modelObject (api: MeshApi, id: string): Record<string, unknown> {
  const experts = api.status.cachedExperts().compatible.filter(r => id === 'meshllm' || r.modelName === id)
  return {
    id,
    object: 'model',
    created: Math.floor(api.startedAt / 1000),
    owned_by: 'meshllm',
    meshllm: {
      experts: experts.length,
      context_length: experts.length > 0 ? Math.min(...experts.map(r => r.contextLength)) : 0,
      description: id === 'meshllm' ? 'the whole mesh: K of N compatible experts per token' : `only the experts serving ${id}`
    }
  }
}
