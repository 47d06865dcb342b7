/**
 * The facade for the expert this node serves: the one `join --model` started, or one loaded
 * at run time by RegisterExpert (one expert per node), detached when the API closes.
 */
import { MAX_SESSIONS } from '../expert/sessions.js'
import { attachExpert, type AttachedExpert, type AttachExpertOptions } from '../expert/attach.js'
import { ApiError, invalid, toApiError } from './errors.js'
import type { GovernanceApi } from './governance-api.js'
import type { StatusApi } from './status.js'
import type { ApiContext, ExpertInfo, LocalExpert, RegisterExpertResult } from './types.js'
import { errorMessage, errorName } from '../util/errors.js'

export interface RegisterExpertParams {
  model: string
  threads?: number
  maxSessions?: number
  contextSize?: number
  gpu?: string
}

export class ExpertsApi {
  private attached?: AttachedExpert
  private attaching = false

  /**
   * `given`: the expert this node already serves (RegisterExpert is then refused);
   * `attachDefaults`: defaults for RegisterExpert (e.g. threads)
   */
  constructor (
    private readonly ctx: ApiContext,
    private readonly governance: GovernanceApi,
    private readonly status: StatusApi,
    private readonly given?: LocalExpert,
    private readonly attachDefaults: Partial<AttachExpertOptions> = {}
  ) {}

  /** the expert this node serves, if any */
  get local (): LocalExpert | undefined {
    return this.given ?? this.attached
  }

  /** a HALT reaches the expert this node attached (join's own expert has its own governance wiring) */
  haltAll (reason: string): void {
    this.attached?.service.haltAll(reason)
  }

  /** RegisterExpert: loads a model and serves it from this node */
  async register (o: RegisterExpertParams): Promise<RegisterExpertResult> {
    if (typeof o.model !== 'string' || o.model.trim().length === 0) throw invalid('model is required (bundled name, .gguf path or URI)', 'model')
    const gpu = o.gpu == null || o.gpu === '' || o.gpu === 'auto' ? 'auto' : o.gpu === 'off' || o.gpu === 'false' ? false : undefined
    if (gpu === undefined) throw invalid(`gpu must be "auto" or "off", got "${String(o.gpu).slice(0, 32)}"`, 'gpu')
    for (const [name, v, max] of [['threads', o.threads, 256], ['max_sessions', o.maxSessions, MAX_SESSIONS], ['context_size', o.contextSize, 1 << 20]] as const) {
      if (v != null && v !== 0 && (!Number.isSafeInteger(v) || v < 1 || v > max)) throw invalid(`${name} must be an integer in [1, ${max}]`, name)
    }
    if (o.contextSize != null && o.contextSize !== 0 && o.contextSize < 16) throw invalid('context_size must be at least 16', 'context_size')
    if (this.given != null) {
      throw new ApiError('failed_precondition', `this node already serves ${this.given.host.summary.name} (one expert per node)`, 'model', 'expert_exists')
    }
    if (this.attached != null || this.attaching) {
      const doing = this.attaching ? 'is loading' : `serves ${this.attached?.host.summary.name}`
      throw new ApiError('failed_precondition', `this node already ${doing} an expert (one expert per node)`, 'model', 'expert_exists')
    }
    this.attaching = true
    const d = this.attachDefaults
    try {
      const a = await attachExpert(this.ctx.node, {
        ...d,
        model: o.model,
        threads: o.threads != null && o.threads > 0 ? o.threads : d.threads,
        maxSessions: o.maxSessions != null && o.maxSessions > 0 ? o.maxSessions : d.maxSessions,
        contextSize: o.contextSize != null && o.contextSize > 0 ? o.contextSize : d.contextSize,
        gpu,
        haltReason: () => this.governance.haltReason(),
        haltEnvelope: () => this.ctx.governance?.state.haltEnvelope
      })
      if (this.ctx.closed()) { await a.detach(); throw new ApiError('unavailable', 'the API is shutting down') }
      this.attached = a
      this.status.noteModel(this.ctx.node.peerId.toString(), a.host.summary.name)
      return { record: a.record, tokensPerSecond: a.tokensPerSecond, threads: a.host.threads, info: this.status.localInfo(a.record) as ExpertInfo }
    } catch (err) {
      if (errorName(err) === 'ExpertAlreadyAttachedError') throw new ApiError('failed_precondition', errorMessage(err), 'model', 'expert_exists')
      if (err instanceof ApiError) throw err
      const e = toApiError(err)
      // a file that is not a loadable GGUF is the caller's input
      if (e.kind === 'internal') throw new ApiError('invalid_argument', `cannot load model "${o.model.slice(0, 256)}": ${errorMessage(err)}`, 'model')
      throw e
    } finally {
      this.attaching = false
    }
  }

  /** detaches the expert RegisterExpert attached */
  async close (): Promise<void> {
    if (this.attached != null) await this.attached.detach().catch(() => {})
    this.attached = undefined
  }
}
