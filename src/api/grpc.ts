/**
 * gRPC server: meshllm.v1.MeshLLM (proto/mesh_llm.proto, loaded at run time with
 * @grpc/proto-loader), grpc.health.v1.Health (grpc-health-check) and server reflection
 * (@grpc/reflection, v1 and v1alpha) so grpcurl and generic clients work.
 *
 * Auth: with a token, every call but the health service needs metadata
 * `authorization: Bearer <token>` (else UNAUTHENTICATED). With `tls` (PEM cert + key) the
 * server speaks TLS only. Reference: docs/api.md.
 */
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check'
import { ReflectionService } from '@grpc/reflection'
import { fileURLToPath } from 'node:url'
import { statSync } from 'node:fs'
import { ApiError, GRPC_CODE, invalid, toApiError } from './errors.js'
import type { MeshApi } from './service.js'
import type { TaskRecord } from '../tasks/model.js'
import { resultSummary, type GenerateResult } from '../router/router.js'
import { tokenMatches, type TlsOptions } from './auth.js'

export const GRPC_SERVICE = 'meshllm.v1.MeshLLM'

/** the .proto: <root>/proto/mesh_llm.proto (this module runs from dist/src/api; src/api for TS runners) */
export function protoPath (): string {
  const fromDist = fileURLToPath(new URL('../../../proto/mesh_llm.proto', import.meta.url))
  return existsSyncSafe(fromDist) ? fromDist : fileURLToPath(new URL('../../proto/mesh_llm.proto', import.meta.url))
}

export const LOADER_OPTIONS: protoLoader.Options = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true }

export function loadMeshProto (): { packageDefinition: protoLoader.PackageDefinition, service: grpc.ServiceDefinition } {
  const packageDefinition = protoLoader.loadSync(protoPath(), LOADER_OPTIONS)
  const pkg = grpc.loadPackageDefinition(packageDefinition)
  const v1 = (pkg.meshllm as grpc.GrpcObject).v1 as grpc.GrpcObject
  return { packageDefinition, service: (v1.MeshLLM as grpc.ServiceClientConstructor).service }
}

function existsSyncSafe (p: string): boolean {
  try { return statSync(p).isFile() } catch { return false }
}

export interface GrpcServerOptions {
  host: string
  port: number
  token?: string
  /** PEM cert + key: gRPC over TLS */
  tls?: TlsOptions
}

export interface GrpcApiServer {
  port: number
  health: HealthImplementation
  close: () => Promise<void>
}

function authInterceptor (token: string): grpc.ServerInterceptor {
  return (methodDescriptor, call) => {
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        if (methodDescriptor.path.startsWith('/grpc.health.v1.Health/')) { next(metadata); return }
        const v = metadata.get('authorization')[0]
        const m = typeof v === 'string' ? /^Bearer\s+(.+)$/i.exec(v.trim()) : null
        if (m != null && tokenMatches(m[1], token)) { next(metadata); return }
        call.sendStatus({
          code: grpc.status.UNAUTHENTICATED,
          details: m == null ? 'missing metadata "authorization: Bearer <token>"' : 'invalid API token',
          metadata: new grpc.Metadata()
        })
      }).build()
    const responder = new grpc.ResponderBuilder().withStart(next => { next(listener) }).build()
    return new grpc.ServerInterceptingCall(call, responder)
  }
}

// the requests as proto-loader decodes them (LOADER_OPTIONS: camelCase, defaults filled in,
// uint64 as Number, bytes as Buffer); a proto3 `optional` field is null or absent when unset

interface RegisterExpertRequest { model: string, threads: number, maxSessions: number, contextSize: number, gpu: string }
interface RefreshRequest { refresh: boolean }
interface ListExpertsRequest { refresh: boolean, includeIncompatible: boolean }
interface SubmitSelfTaskRequest { type: string, paramsJson: string, description: string, priority: number, source: string }
interface GetTaskRequest { id: string }
interface ListTasksRequest { status: string, limit: number, offset: number }
/** HaltMeshRequest, RelayGovernanceMessageRequest */
interface EnvelopeRequest { envelope: unknown }

interface GenerateRequest {
  prompt: string
  k: number
  maxTokens: number
  temperature?: number | null
  topK: number
  topP?: number | null
  seed?: number | null
  stop: string[]
  rule: string
  experts: string[]
  ignoreEos: boolean
}

/** proto GenerateSummary */
export type GenerateSummaryProto = ReturnType<typeof resultSummary> & { tokensPerSecond: number }

/** proto GenerateResponse: one of its `event`s */
type GenerateResponse = { token: { index: number, id: number, text: string, experts: string[] } } | { summary: GenerateSummaryProto }

/** proto Task (camelCase, as proto-loader takes it) */
export interface TaskProto {
  id: string
  type: string
  paramsJson: string
  description: string
  status: string
  tier: TaskRecord['tier']
  tierName: string
  knownAction: boolean
  approval: string
  approvalReason: string
  needs: TaskRecord['needs']
  priority: number
  source: string
  createdAtMs: number
  updatedAtMs: number
  resultJson: string
  origin: string
  title: string
  domain: string
  evidence: string[]
  actionsJson: string
}

function taskToProto (t: TaskRecord): TaskProto {
  return {
    id: t.id,
    type: t.type,
    paramsJson: JSON.stringify(t.params),
    description: t.description,
    status: t.status,
    tier: t.tier,
    tierName: t.tierName,
    knownAction: t.knownAction,
    approval: t.approval,
    approvalReason: t.approvalReason,
    needs: t.needs,
    priority: t.priority,
    source: t.source,
    createdAtMs: t.createdAtMs,
    updatedAtMs: t.updatedAtMs,
    resultJson: t.result !== undefined ? JSON.stringify(t.result) : '',
    origin: t.origin,
    title: t.title,
    domain: t.domain,
    evidence: t.evidence,
    actionsJson: JSON.stringify(t.actions)
  }
}

export function summaryToProto (r: GenerateResult): GenerateSummaryProto {
  return { ...resultSummary(r), tokensPerSecond: r.tokensPerSecond }
}

export async function startGrpcServer (api: MeshApi, o: GrpcServerOptions): Promise<GrpcApiServer> {
  const { packageDefinition, service } = loadMeshProto()
  const server = new grpc.Server({
    interceptors: o.token != null ? [authInterceptor(o.token)] : [],
    'grpc.max_receive_message_length': 1024 * 1024
  })
  const fail = (err: unknown): Partial<grpc.StatusObject> => {
    const e = toApiError(err)
    api.metrics.error('grpc', e.kind)
    return { code: GRPC_CODE[e.kind], details: e.message }
  }
  const unary = <Req, Res>(
    method: string,
    fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res
  ): grpc.handleUnaryCall<Req, Res> => {
    return (call, callback) => {
      api.metrics.request('grpc', method)
      Promise.resolve().then(async () => await fn(call.request, call)).then(
        (res) => { callback(null, res) },
        (err) => { callback(fail(err) as grpc.ServiceError) }
      )
    }
  }

  const handlers: grpc.UntypedServiceImplementation = {
    RegisterExpert: unary('RegisterExpert', async (req: RegisterExpertRequest) => {
      const r = await api.experts.register({ model: req.model, threads: req.threads, maxSessions: req.maxSessions, contextSize: req.contextSize, gpu: req.gpu })
      return { expert: r.info, measuredTokensPerSecond: r.tokensPerSecond, threads: r.threads }
    }),
    GetRouterStatus: unary('GetRouterStatus', async (req: RefreshRequest) => await api.status.routerStatus(req.refresh === true)),
    ListExperts: unary('ListExperts', async (req: ListExpertsRequest) => ({
      experts: await api.status.listExperts(req.refresh === true, req.includeIncompatible === true)
    })),
    SubmitSelfTask: unary('SubmitSelfTask', (req: SubmitSelfTaskRequest) => taskToProto(api.tasks.submit({
      type: req.type,
      paramsJson: req.paramsJson,
      description: req.description,
      priority: req.priority,
      source: req.source !== '' ? req.source : 'grpc'
    }))),
    GetTask: unary('GetTask', (req: GetTaskRequest) => taskToProto(api.tasks.get(req.id))),
    ListTasks: unary('ListTasks', (req: ListTasksRequest) => {
      const r = api.tasks.list({ status: req.status, limit: req.limit, offset: req.offset })
      return { tasks: r.tasks.map(taskToProto), total: r.total }
    }),
    HaltMesh: unary('HaltMesh', async (req: EnvelopeRequest) => await api.governance.relay(toBytes(req.envelope), 'grpc', true)),
    RelayGovernanceMessage: unary('RelayGovernanceMessage', async (req: EnvelopeRequest) => await api.governance.relay(toBytes(req.envelope), 'grpc', false)),
    GetGovernanceState: unary('GetGovernanceState', () => api.governance.state()),
    Generate: (call: grpc.ServerWritableStream<GenerateRequest, GenerateResponse>) => {
      api.metrics.request('grpc', 'Generate')
      const ctrl = new AbortController()
      call.on('cancelled', () => { ctrl.abort(new ApiError('deadline_exceeded', 'cancelled by the client', null, 'cancelled')) })
      const deadline = call.getDeadline()
      const ms = deadline instanceof Date
        ? deadline.getTime() - Date.now()
        : typeof deadline === 'number' && Number.isFinite(deadline) ? deadline - Date.now() : Infinity
      let timer: NodeJS.Timeout | undefined
      if (Number.isFinite(ms)) {
        timer = setTimeout(() => { ctrl.abort(new ApiError('deadline_exceeded', 'deadline exceeded', null, 'deadline')) }, Math.max(0, ms))
      }
      void (async () => {
        try {
          const req = call.request
          if (typeof req.prompt !== 'string' || req.prompt.length === 0) throw invalid('prompt is required', 'prompt')
          const prep = await api.generation.prepare({
            prompt: req.prompt,
            k: req.k > 0 ? req.k : undefined,
            maxTokens: req.maxTokens > 0 ? req.maxTokens : undefined,
            temperature: req.temperature ?? undefined,
            topK: req.topK,
            topP: req.topP ?? undefined,
            seed: req.seed ?? undefined,
            stop: req.stop,
            rule: req.rule,
            experts: req.experts,
            ignoreEos: req.ignoreEos === true
          }, ctrl.signal)
          const result = await api.generation.generate(prep, {
            signal: ctrl.signal,
            onToken: (t) => { if (!call.cancelled) call.write({ token: { index: t.index, id: t.token, text: t.text, experts: t.experts } }) }
          })
          if (!call.cancelled) {
            call.write({ summary: summaryToProto(result) })
            call.end()
          }
        } catch (err) {
          const status = fail(err)
          if (!call.cancelled) call.emit('error', status)
        } finally {
          clearTimeout(timer)
        }
      })()
    }
  }
  server.addService(service, handlers)
  const health = new HealthImplementation({ '': 'SERVING', [GRPC_SERVICE]: 'SERVING' })
  health.addToServer(server)
  // reflection describes our service and the health service (grpcurl list / describe)
  let reflected = packageDefinition
  try { reflected = { ...protoLoader.loadSync(healthProtoPath, LOADER_OPTIONS), ...packageDefinition } } catch {}
  new ReflectionService(reflected).addToServer(server)

  const bindHost = o.host.includes(':') ? `[${o.host}]` : o.host
  const port = await new Promise<number>((resolve, reject) => {
    const creds = o.tls != null
      ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(o.tls.cert), private_key: Buffer.from(o.tls.key) }], false)
      : grpc.ServerCredentials.createInsecure()
    server.bindAsync(`${bindHost}:${o.port}`, creds, (err, p) => { if (err != null) reject(err); else resolve(p) })
  })
  return {
    port,
    health,
    close: async () => {
      health.setStatus('', 'NOT_SERVING')
      health.setStatus(GRPC_SERVICE, 'NOT_SERVING')
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => { server.forceShutdown(); resolve() }, 2_000)
        server.tryShutdown(() => { clearTimeout(t); resolve() })
      })
    }
  }
}

function toBytes (b: unknown): Uint8Array {
  if (b instanceof Uint8Array) return b
  if (typeof b === 'string') return Uint8Array.from(Buffer.from(b, 'base64'))
  return new Uint8Array(0)
}
