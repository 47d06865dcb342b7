/**
 * The API core shared by gRPC (src/api/grpc.ts) and HTTP (src/api/http.ts): MeshApi builds
 * one typed facade per concern on one context and wires them to the router and governance:
 *
 * - `status` (src/api/status.ts): experts, their health, throughput, GetRouterStatus, dashboard
 * - `generation` (src/api/generation.ts): request checks, generation, chat template, model ids
 * - `experts` (src/api/experts.ts): the expert this node serves, RegisterExpert
 * - `tasks` (src/api/task-api.ts): the node's task table (src/tasks/store.ts), the agent's tasks included
 * - `governance` (src/api/governance-api.ts): halt state, governance state, relaying envelopes
 *
 * Transport code only converts requests, calls a facade and maps ApiError kinds.
 */
import { API_EXPERT_REFRESH_MS } from '../node/periodic.js'
import { EventEmitter } from 'node:events'
import type { MeshNode } from '../node/node.js'
import type { Router } from '../router/router.js'
import type { GovernanceService } from '../governance/service.js'
import type { AttachExpertOptions } from '../expert/attach.js'
import type { Registry } from 'prom-client'
import { ApiMetrics } from './metrics.js'
import { TaskStore } from '../tasks/store.js'
import { GovernanceApi } from './governance-api.js'
import { StatusApi } from './status.js'
import { ExpertsApi } from './experts.js'
import { GenerationApi } from './generation.js'
import { TasksApi } from './task-api.js'
import type { ApiContext, LocalExpert } from './types.js'

export type * from './types.js'

export interface MeshApiOptions {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  /** the expert this node already serves (join --model); RegisterExpert is then refused */
  expert?: LocalExpert
  /** the node's task table (default: an in-memory one) */
  tasks?: TaskStore
  /** K when a request does not say (default 3) */
  defaultK?: number
  /** largest max_tokens a request may ask (default 2048) */
  maxTokensLimit?: number
  /** longest generation (ms, default 300 000): then DEADLINE_EXCEEDED */
  generateTimeoutMs?: number
  /** a Jinja chat template overriding the model's */
  chatTemplate?: string
  /** defaults for RegisterExpert (e.g. threads) */
  attachDefaults?: Partial<AttachExpertOptions>
  /** period of the background expert refresh (ms, default API_EXPERT_REFRESH_MS: 60 s) */
  refreshMs?: number
  /**
   * the prom-client registry /metrics serves (default: a new one); give the one the node's
   * libp2p metrics are on (MeshNodeOptions.metrics) to serve libp2p_* series with ours
   */
  metricsRegistry?: Registry
}

export class MeshApi {
  readonly node: MeshNode
  readonly router: Router
  readonly metrics: ApiMetrics
  readonly events = new EventEmitter()
  readonly startedAt = Date.now()
  readonly status: StatusApi
  readonly generation: GenerationApi
  readonly experts: ExpertsApi
  readonly tasks: TasksApi
  readonly governance: GovernanceApi
  private refreshTimer?: NodeJS.Timeout
  private closed = false

  constructor (opts: MeshApiOptions) {
    this.node = opts.node
    this.router = opts.router
    this.events.setMaxListeners(0)
    const ctx: ApiContext = {
      node: opts.node,
      router: opts.router,
      governance: opts.governance,
      events: this.events,
      defaultK: opts.defaultK ?? 3,
      maxTokensLimit: opts.maxTokensLimit ?? 2048,
      generateTimeoutMs: opts.generateTimeoutMs ?? 300_000,
      closed: () => this.closed
    }
    this.governance = new GovernanceApi(ctx)
    this.status = new StatusApi(ctx, this.governance, () => this.experts.local, () => this.tasks.latest(10))
    this.experts = new ExpertsApi(ctx, this.governance, this.status, opts.expert, opts.attachDefaults)
    this.generation = new GenerationApi(ctx, this.governance, this.status, opts.chatTemplate)
    this.tasks = new TasksApi(opts.tasks ?? new TaskStore(':memory:'), opts.governance, opts.tasks == null)
    this.metrics = new ApiMetrics({
      router: this.router,
      governance: opts.governance,
      localHost: () => this.experts.local?.host,
      localService: () => this.experts.local?.service,
      expertsOnline: () => {
        const c = this.status.cachedExperts()
        return { compatible: c.compatible.length, incompatible: c.incompatible.length }
      },
      modelOf: (id) => this.status.modelOf(id) ?? 'unknown'
    }, { registry: opts.metricsRegistry })
    this.router.observers.add(this.status.observer)
    this.router.observers.add(this.metrics.observer)
    opts.governance?.on({
      onHalt: (reason) => {
        this.router.abortAll(reason)
        this.experts.haltAll(reason)
      },
      onChange: (snap, kind) => { this.governance.onChange(snap, kind) }
    })
    const refresh = (): void => {
      if (this.closed) return
      this.status.refreshExperts(false).catch(() => {}).finally(() => {
        if (!this.closed) { this.refreshTimer = setTimeout(refresh, opts.refreshMs ?? API_EXPERT_REFRESH_MS); this.refreshTimer.unref() }
      })
    }
    this.refreshTimer = setTimeout(refresh, 0)
    this.refreshTimer.unref()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.refreshTimer)
    this.router.observers.delete(this.status.observer)
    this.router.observers.delete(this.metrics.observer)
    this.events.removeAllListeners()
    await this.experts.close()
    this.tasks.close()
  }
}
