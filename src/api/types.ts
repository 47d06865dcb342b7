/**
 * What the API facades (src/api/status.ts, generation.ts, experts.ts, task-api.ts,
 * governance-api.ts) share and return: the context every facade is built on and the typed
 * shapes the gRPC (proto/mesh_llm.proto, camelCase) and HTTP (dashboard JSON) layers send.
 */
import type { EventEmitter } from 'node:events'
import type { MeshNode } from '../node/node.js'
import type { GenerateOptions, Router } from '../router/router.js'
import type { GovernanceService } from '../governance/service.js'
import type { Thresholds } from '../governance/config.js'
import type { ModelHost } from '../expert/model-host.js'
import type { InferService } from '../expert/infer-service.js'
import type { ExpertAdvertiser } from '../expert/advertise.js'
import type { ExpertRecord } from '../wire/record.js'

/** an expert this node serves: `startExpert`'s Expert (join) or an AttachedExpert */
export interface LocalExpert {
  host: ModelHost
  service: InferService
  advertiser: ExpertAdvertiser
  tokensPerSecond: number
}

/** what every facade is built on (MeshApi makes one) */
export interface ApiContext {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  /** 'token', 'generation' and 'governance' events (the dashboard's /api/events) */
  events: EventEmitter
  /** K when a request does not say */
  defaultK: number
  /** largest max_tokens a request may ask */
  maxTokensLimit: number
  /** longest generation (ms) */
  generateTimeoutMs: number
  /** whether MeshApi.close was called */
  closed: () => boolean
}

export type ExpertHealthState = 'unknown' | 'healthy' | 'degraded' | 'circuit_open'

/** the router's measurements of one expert (RouterStatus.experts[].health) */
export interface ExpertHealthInfo {
  state: ExpertHealthState
  latencyMs: number
  samples: number
  successes: number
  failures: number
  consecutiveFailures: number
  circuitOpenUntilMs: number
  lastError: string
}

/** one expert as ListExperts / GetRouterStatus describe it (proto ExpertInfo) */
export interface ExpertInfo {
  peerId: string
  model: string
  /** tokenizer fingerprint, hex */
  fingerprint: string
  parameterCount: number
  quantization: string
  contextLength: number
  tokensPerSecond: number
  freeSlots: number
  maxSlots: number
  addrs: string[]
  issuedAtMs: number
  expiresAtMs: number
  health: ExpertHealthInfo
  /** the expert this node serves */
  local: boolean
  compatible: boolean
}

/** experts as the router last found them */
export interface ExpertLists {
  compatible: ExpertRecord[]
  incompatible: ExpertRecord[]
}

export interface HaltInfo {
  halted: boolean
  reason: string
  version: number
  atMs: number
}

/** GetRouterStatus */
export interface RouterStatusInfo {
  peerId: string
  listenAddrs: string[]
  experts: ExpertInfo[]
  expertsOnline: number
  incompatibleExperts: number
  policy: { defaultK: number, defaultRule: string, selection: string, maxTokensLimit: number }
  stats: {
    generations: number
    tokens: number
    lastTokensPerSecond: number
    recentTokensPerSecond: number
    bytesPerExpertToken: number
    expertSteps: number
    bytes: number
  }
  halt: HaltInfo
  localExpert?: ExpertInfo
}

/** one governance message this node saw (applied from gossip or relayed, or refused) */
export interface GovernanceEventInfo {
  atMs: number
  kind: string
  version: number
  accepted: boolean
  detail: string
  via: string
}

/** GetGovernanceState (the optional fields only with a governance service) */
export interface GovernanceStateInfo {
  meshId: string
  version: number
  halt: HaltInfo
  readOnly: boolean
  phase: number
  phaseName: string
  keyholders: string[]
  thresholds?: Thresholds
  configDigest: string
  rejected?: { forged: number, replay: number, malformed: number, other: number }
  lastHalt?: HaltInfo
  lastResumeAtMs?: number
  /** newest first, at most 50 */
  recent: GovernanceEventInfo[]
}

/** HaltMesh / RelayGovernanceMessage: an envelope applied here and gossiped */
export interface RelayResult {
  accepted: true
  kind: string
  version: number
  recipients: number
  peersApplied: number
  peersRefused: number
  state: GovernanceStateInfo
}

/** what the dashboard polls / receives */
export interface DashboardSnapshot {
  at: number
  status: RouterStatusInfo
  /** [ms, tokens] per second, oldest first */
  throughput: Array<[number, number]>
  lastToken: { at: number, experts: string[] }
  governance: GovernanceStateInfo
  /** the node's task table: how many, and the latest (the agent's and the submitted ones) */
  tasks: { total: number, latest: DashboardTask[] }
}

/** one task as the dashboard shows it (GetTask has the whole task) */
export interface DashboardTask {
  id: string
  origin: string
  /** the agent's view (docs/api.md: the mapping) */
  state: string
  status: string
  approval: string
  tierName: string
  type: string
  /** an agent task's title, else the description (at most 160 characters) */
  title: string
  domain: string
  source: string
  createdAtMs: number
}

/** RegisterExpert */
export interface RegisterExpertResult {
  record: ExpertRecord
  tokensPerSecond: number
  threads: number
  info: ExpertInfo
}

/** a generation request as the transports decode it (values unchecked: `prepare` checks them) */
export interface GenerateParams {
  prompt: string | number[]
  k?: unknown
  maxTokens?: unknown
  temperature?: unknown
  topK?: unknown
  topP?: unknown
  seed?: unknown
  stop?: unknown
  rule?: unknown
  experts?: string[]
  ignoreEos?: boolean
  /** when maxTokens is not given: as many as fit, at most this many (default 64) */
  defaultMaxTokens?: number
  /** parameter names for error messages (OpenAI: max_tokens / messages) */
  names?: { maxTokens?: string, prompt?: string }
}

/** a request checked against the mesh, ready to run */
export interface PreparedGeneration {
  tokens: number[]
  promptTokens: number
  contextLength: number
  options: GenerateOptions
}
