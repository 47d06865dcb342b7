/**
 * The client APIs of a node: gRPC (meshllm.v1.MeshLLM + health + reflection), the
 * OpenAI-compatible HTTP API, Prometheus /metrics and the dashboard. Reference: docs/api.md.
 *
 *   const api = await startApi({ node, router, governance, expert, grpc: '127.0.0.1:50051', http: '127.0.0.1:8080', token, tls? })
 *   … api.grpcPort, api.httpPort …
 *   await api.close()
 */
import type { MeshNode } from '../node/node.js'
import type { Router } from '../router/router.js'
import type { GovernanceService } from '../governance/service.js'
import { MeshApi, type LocalExpert, type MeshApiOptions } from './service.js'
import { startGrpcServer, type GrpcApiServer } from './grpc.js'
import { startHttpServer, type HttpApiServer } from './http.js'
import { ApiConfigError, checkBind, checkTls, parseHostPort, type TlsOptions } from './auth.js'
import { TaskStore } from '../tasks/store.js'
import type { AttachExpertOptions } from '../expert/attach.js'

export { MeshApi, type LocalExpert, type MeshApiOptions, type GenerateParams } from './service.js'
export type { StatusApi } from './status.js'
export type { GenerationApi } from './generation.js'
export type { ExpertsApi, RegisterExpertParams } from './experts.js'
export type { TasksApi, SubmitTaskParams, ListTasksParams, TaskList } from './task-api.js'
export type { GovernanceApi } from './governance-api.js'
export type { ExpertInfo, ExpertHealthInfo, RouterStatusInfo, HaltInfo, GovernanceStateInfo, GovernanceEventInfo, RelayResult, DashboardSnapshot, RegisterExpertResult, PreparedGeneration } from './types.js'
export { TaskStore, TaskDatabaseError, type TaskStoreOptions, type ListTasksOptions, type ApprovalRecord } from '../tasks/store.js'
export { assessTask, stateOf, InvalidTaskError, TaskNotFoundError, TASK_STATUSES, TASK_STATES, type TaskRecord, type TaskStatus, type TaskState, type TaskOrigin, type NewTask, type AgentTask, type TaskAction, type Approval } from '../tasks/model.js'
export { ApiError, toApiError, type ApiErrorKind } from './errors.js'
export { ApiConfigError, ApiTokenError, ApiTlsError, InsecureBindError, parseHostPort, isLoopback, resolveApiToken, readApiTokenFile, readTlsFiles, type TlsOptions, type ApiTokenSources } from './auth.js'
export { ChatFormatter, type ChatMessage } from './chat.js'
export { protoPath, loadMeshProto, LOADER_OPTIONS, GRPC_SERVICE } from './grpc.js'

export interface StartApiOptions {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  /** the expert this node serves (join --model): RegisterExpert is then refused */
  expert?: LocalExpert
  /** the node's task table (shared with an agent: src/tasks/store.ts), or its file path (default: in memory) */
  tasks?: TaskStore | string
  /** gRPC bind "host:port" (port 0: any free port); omitted: no gRPC server */
  grpc?: string
  /** HTTP bind "host:port"; omitted: no HTTP server */
  http?: string
  /** bearer token; required to bind a non-loopback address */
  token?: string
  /** PEM certificate chain and key: both servers speak TLS (HTTPS, gRPC over TLS) */
  tls?: TlsOptions
  /**
   * Allows a non-loopback bind without `tls`, for a TLS-terminating reverse proxy on another
   * host (docs/api.md). Without either, a non-loopback bind is refused (InsecureBindError).
   */
  insecureBehindProxy?: boolean
  defaultK?: number
  maxTokensLimit?: number
  generateTimeoutMs?: number
  /** HTTP request body limit (bytes, default 1 MiB) */
  maxBodyBytes?: number
  /** a Jinja chat template overriding the model's (for /v1/chat/completions) */
  chatTemplate?: string
  /** defaults for RegisterExpert (threads, maxSessions, …) */
  attachDefaults?: Partial<AttachExpertOptions>
  /** the prom-client registry /metrics serves (MeshApiOptions.metricsRegistry) */
  metricsRegistry?: MeshApiOptions['metricsRegistry']
}

export interface ApiHandle {
  /** bound gRPC port (undefined without `grpc`) */
  grpcPort?: number
  /** bound HTTP port (undefined without `http`) */
  httpPort?: number
  api: MeshApi
  close: () => Promise<void>
}

/**
 * Checks `--grpc` / `--http` / the token / TLS without binding anything (throws
 * ApiConfigError or a subclass: ApiTlsError, InsecureBindError): lets `join` fail before it
 * loads a model. Non-loopback binds need a token and TLS or `insecureBehindProxy`.
 */
export function validateApiOptions (opts: Pick<StartApiOptions, 'grpc' | 'http' | 'token' | 'tls' | 'insecureBehindProxy'>): { grpc?: { host: string, port: number }, http?: { host: string, port: number } } {
  if (opts.grpc == null && opts.http == null) throw new ApiConfigError('startApi needs grpc and/or http ("host:port")')
  const grpc = opts.grpc != null ? parseHostPort(opts.grpc, '--grpc') : undefined
  const http = opts.http != null ? parseHostPort(opts.http, '--http') : undefined
  if (opts.tls != null) checkTls(opts.tls)
  const transport = { tls: opts.tls != null, insecureBehindProxy: opts.insecureBehindProxy }
  if (grpc != null) checkBind(grpc.host, opts.token, 'gRPC', transport)
  if (http != null) checkBind(http.host, opts.token, 'HTTP', transport)
  return { grpc, http }
}

export async function startApi (opts: StartApiOptions): Promise<ApiHandle> {
  const { grpc: grpcAddr, http: httpAddr } = validateApiOptions(opts)
  const tasks = typeof opts.tasks === 'string' ? new TaskStore(opts.tasks) : opts.tasks
  const api = new MeshApi({
    node: opts.node,
    router: opts.router,
    governance: opts.governance,
    expert: opts.expert,
    tasks,
    defaultK: opts.defaultK,
    maxTokensLimit: opts.maxTokensLimit,
    generateTimeoutMs: opts.generateTimeoutMs,
    chatTemplate: opts.chatTemplate,
    attachDefaults: opts.attachDefaults,
    metricsRegistry: opts.metricsRegistry
  })
  let grpcServer: GrpcApiServer | undefined
  let httpServer: HttpApiServer | undefined
  const closeAll = async (): Promise<void> => {
    await Promise.allSettled([grpcServer?.close(), httpServer?.close()])
    await api.close()
    if (typeof opts.tasks === 'string') tasks?.close()
  }
  try {
    if (grpcAddr != null) grpcServer = await startGrpcServer(api, { ...grpcAddr, token: opts.token, tls: opts.tls })
    if (httpAddr != null) httpServer = await startHttpServer(api, { ...httpAddr, token: opts.token, tls: opts.tls, maxBodyBytes: opts.maxBodyBytes })
  } catch (err) {
    await closeAll()
    throw err
  }
  let closing: Promise<void> | undefined
  return {
    grpcPort: grpcServer?.port,
    httpPort: httpServer?.port,
    api,
    close: async () => { closing ??= closeAll(); await closing }
  }
}
