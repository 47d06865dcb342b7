/**
 * The self-improvement agent: every cycle it observes the mesh, detects problems, asks the
 * mesh itself (through the router, like any client) to propose a task for each finding as
 * JSON constrained to a fixed schema, classifies and gates every action, runs the read-only
 * ones, audits the experts and the governance state of its peers, and stores everything.
 * Nothing above read-only ever executes on its own. A HALT stops it at once.
 *
 * docs/agent.md describes the loop, the rules and the storage.
 */
import type { MeshNode } from '../node/node.js'
import type { Router } from '../router/router.js'
import type { GovernanceService } from '../governance/service.js'
import { Tier, classifyAction, gate, gateContext } from '../governance/tiers.js'
import { canonicalJson } from '../governance/motions.js'
import { HaltedError, errorMessage } from '../util/errors.js'
import { JsonConstraint } from './json-constraint-tokens.js'
import { buildPrompt, meaningful, mergeEvidence, taskView, tokenizerPieceTable, type TaskView } from './task-text.js'
import type { AgentStore, CycleState } from './store.js'
import type { ActionState, TaskAction, TaskRecord } from '../tasks/model.js'
import { TrafficMonitor, collectMetrics, metricsToSamples, type InjectedMetrics, type MeshMetrics, type PreviousSummary } from './observe.js'
import { allowedActionTypes, detect, type DetectorConfig, type Finding } from './detectors.js'
import { DEFAULT_LIMITS, checkTaskShape, taskSchema, type ProposedAction, type TaskLimits } from './task-schema.js'
import { DEFAULT_MIN_EXPERTS, FallbackController, bestExpert, capacityReport, complexityOf, fractalK, priorityOf, type CapacityReport } from './capacity.js'
import { partition, streamFor, type Assignment } from './subsets.js'
import { checkGovernancePeers, governancePeers, spotCheck, spotCheckPairs, type GovPeerCheck, type SpotCheck } from './audit.js'

export interface AgentConfig extends DetectorConfig {
  /** stream domains in priority order (default: security, scheduler, network, capacity, storage, governance) */
  domains?: string[]
  /** most tokens of one proposal (default 240; less when the context is short) */
  maxTokens?: number
  /** sampling temperature of proposals (default 0: greedy) */
  temperature?: number
  seed?: number
  /** longest proposal generation (ms, default 120 000): then a deterministic task is stored */
  generateTimeoutMs?: number
  /** findings handled per cycle, most severe first (default 8) */
  maxFindings?: number
  /** an open task for the same finding younger than this suppresses a new one (ms, default 1 h) */
  dedupeMs?: number
  /** spot-check pairs per cycle (default 1) and tokens per spot check (default 4) */
  spotCheckPairs?: number
  spotCheckTokens?: number
  /** mean total-variation distance from which a spot-checked pair is divergent (default 0.98) */
  divergentTv?: number
  /** governance peers audited per cycle (default 8) */
  auditPeers?: number
  auditTimeoutMs?: number
  /** extra experts above minExperts before the fallback releases (default 0) */
  fallbackHysteresis?: number
  limits?: Partial<TaskLimits>
}

export interface AgentOptions {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  store: AgentStore
  config?: AgentConfig
  /** progress lines (default: none) */
  log?: (line: string) => void
  now?: () => number
}

export { buildPrompt, listTasks, mergeEvidence, taskView, tokenizerPieceTable, type TaskActionView, type TaskView } from './task-text.js'

export interface CycleReport {
  cycle: number
  state: CycleState
  haltReason?: string
  error?: string
  mode?: 'distributed' | 'fallback'
  startedAt: number
  endedAt?: number
  metrics?: MeshMetrics
  capacity?: CapacityReport
  findings: Finding[]
  /** findings skipped because an open task answers them */
  suppressed: string[]
  /** stream → experts serving it this cycle (disjoint) */
  streams: Record<string, string[]>
  /** tasks stored by this cycle, as stored (the node's task table: src/tasks/store.ts) */
  stored: TaskRecord[]
  /** the same, in the CLI's JSON shape */
  tasks: TaskView[]
  audit?: { spotChecks: SpotCheck[], governance: GovPeerCheck[] }
}

export const DEFAULT_DOMAINS = ['security', 'scheduler', 'network', 'capacity', 'storage', 'governance']

const AUDIT_PROMPTS = ['The kernel', 'Once upon a time', 'The weather today is', 'In the beginning', 'A network is']

const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 } as const
/** a task's priority in the task table: its finding's severity (the audit: 0) */
const SEVERITY_PRIORITY = { critical: 2, warning: 1, info: 0 } as const

interface Stream { name: string, experts: string[], findings: Finding[] }
interface CycleContext {
  cycle: number
  signal: AbortSignal
  metrics: MeshMetrics
  fallback: boolean
  checkpoint: () => void
}

export class Agent {
  readonly store: AgentStore
  readonly config: AgentConfig
  private readonly fallback: FallbackController
  private readonly traffic: TrafficMonitor
  private assignment?: Assignment
  private ctrl?: AbortController
  private running?: Promise<CycleReport>
  private timer?: NodeJS.Timeout
  private looping = false
  private disposed = false
  /** removes this agent's governance listener (close()) */
  private readonly unsubscribe?: () => void
  private readonly now: () => number
  private readonly log: (line: string) => void

  constructor (private readonly o: AgentOptions) {
    this.store = o.store
    this.config = o.config ?? {}
    this.now = o.now ?? Date.now
    this.log = o.log ?? (() => {})
    this.fallback = new FallbackController(this.config.minExperts ?? DEFAULT_MIN_EXPERTS, this.config.fallbackHysteresis ?? 0)
    this.traffic = new TrafficMonitor(o.router)
    this.unsubscribe = o.governance?.on({ onHalt: (reason) => { this.halt(reason) } })
  }

  /** the halt in force, if any */
  get haltReason (): string | undefined {
    return this.o.governance?.haltReason
  }

  /** the fallback to one centralised model is engaged */
  get centralised (): boolean {
    return this.fallback.active === true
  }

  /** a HALT: the in-flight cycle (and its generation) is aborted, the loop stops */
  private halt (reason: string): void {
    this.log(`HALT: ${reason}: agent stopped`)
    this.ctrl?.abort(new HaltedError(`halted by governance: ${reason}`))
    this.stopLoop()
  }

  /** Runs cycles every `intervalMs` (1 min … 24 h), the first at once. Stops on HALT. */
  start (intervalMs: number, o: { injected?: () => InjectedMetrics | undefined, onCycle?: (r: CycleReport) => void } = {}): void {
    if (!(intervalMs >= 60_000 && intervalMs <= 86_400_000)) throw new RangeError(`the agent's interval must be 1 minute … 24 hours, got ${intervalMs} ms`)
    if (this.looping) throw new Error('the agent is already started')
    if (this.disposed) throw new Error('the agent is closed')
    const h = this.haltReason
    if (h != null) throw new HaltedError(`halted by governance: ${h}`)
    this.looping = true
    const tick = async (): Promise<void> => {
      this.timer = undefined
      if (!this.looping) return
      try {
        const r = await this.runCycle({ injected: o.injected?.() })
        o.onCycle?.(r)
        if (r.state === 'halted') this.stopLoop()
      } catch (err) {
        this.log(`cycle failed: ${errorMessage(err)}`)
      }
      if (this.looping) {
        this.timer = setTimeout(() => { void tick() }, intervalMs)
        this.timer.unref?.()
      }
    }
    void tick()
  }

  /** stops the loop (an in-flight cycle finishes unless `abort`) */
  stop (abort = false): void {
    this.stopLoop()
    if (abort) this.ctrl?.abort(new Error('agent stopped'))
  }

  get started (): boolean {
    return this.looping
  }

  private stopLoop (): void {
    this.looping = false
    if (this.timer != null) clearTimeout(this.timer)
    this.timer = undefined
  }

  /** stops, waits for an in-flight cycle, detaches from the router */
  async close (): Promise<void> {
    this.stop(true)
    await this.running?.catch(() => {})
    this.traffic.detach()
    this.unsubscribe?.()
    this.disposed = true
  }

  async runCycle (o: { signal?: AbortSignal, injected?: InjectedMetrics } = {}): Promise<CycleReport> {
    if (this.running != null) throw new Error('a cycle is already running')
    if (this.disposed) throw new Error('the agent is closed')
    const p = this.cycle(o)
    this.running = p
    try {
      return await p
    } finally {
      this.running = undefined
    }
  }

  private previousSummary (cycle: number): PreviousSummary | undefined {
    for (const c of this.store.cycles(20)) {
      if (c.id < cycle && Array.isArray(c.summary.experts)) return c.summary as PreviousSummary
    }
    return undefined
  }

  private async cycle (o: { signal?: AbortSignal, injected?: InjectedMetrics }): Promise<CycleReport> {
    const cfg = this.config
    const store = this.store
    const started = this.now()
    const cycle = store.startCycle(started)
    const ctrl = new AbortController()
    this.ctrl = ctrl
    const signal = o.signal != null ? AbortSignal.any([o.signal, ctrl.signal]) : ctrl.signal
    const report: CycleReport = { cycle, state: 'running', startedAt: started, findings: [], suppressed: [], streams: {}, stored: [], tasks: [] }
    const checkpoint = (): void => {
      const h = this.haltReason
      if (h != null) throw new HaltedError(`halted by governance: ${h}`)
      if (signal.aborted) throw signal.reason
    }
    const summary: Record<string, unknown> = {}
    try {
      checkpoint()
      const prev = this.previousSummary(cycle)
      const metrics = await collectMetrics({
        node: this.o.node,
        router: this.o.router,
        governance: this.o.governance,
        traffic: this.traffic,
        previous: prev,
        injected: o.injected,
        signal,
        now: this.now()
      })
      report.metrics = metrics
      Object.assign(summary, { experts: metrics.experts.map(e => e.id), rejected: metrics.governance.rejected })
      store.addSamples(cycle, metricsToSamples(metrics), this.now())
      checkpoint()

      const k = Math.max(1, cfg.k ?? 3)
      const n = metrics.experts.length
      const usable = metrics.experts.filter(e => !e.circuitOpen)
      const fb = this.fallback.update(n)
      if (fb.changed) {
        this.log(fb.active ? `centralised fallback engaged: ${n} experts < ${this.fallback.minExperts}` : `centralised fallback released: ${n} experts`)
      }
      report.mode = fb.active ? 'fallback' : 'distributed'
      report.capacity = capacityReport(n, k, metrics.governance.phase, cfg, fb.active)

      // findings, most severe first, without those an open task already answers
      const since = this.now() - (cfg.dedupeMs ?? 3_600_000)
      const all = detect(metrics, prev, cfg).sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity])
      const findings: Finding[] = []
      for (const f of all) {
        if (store.tasks.openTaskFor(f.key, since) != null) report.suppressed.push(f.key)
        else findings.push(f)
      }
      report.findings = findings.slice(0, cfg.maxFindings ?? 8)

      // streams: disjoint subsets (distributed) or the single best expert (fallback)
      const streams: Stream[] = []
      if (fb.active) {
        const best = bestExpert(usable.length > 0 ? usable : metrics.experts)
        streams.push({ name: 'central', experts: best != null ? [best] : [], findings: report.findings })
        this.assignment = undefined
      } else {
        const domains = cfg.domains ?? DEFAULT_DOMAINS
        const a = partition(usable.map(e => e.id), domains, { k, maxStreams: Math.max(1, report.capacity.streams), previous: this.assignment })
        this.assignment = a
        const names = Object.keys(a.streams)
        if (names.length === 0) {
          streams.push({ name: 'all', experts: usable.map(e => e.id), findings: report.findings })
        } else {
          for (const name of names) streams.push({ name, experts: a.streams[name], findings: [] })
          const load = new Map<string, number>()
          for (const f of report.findings) {
            const s = streamFor(f.domains, names, load) as string
            load.set(s, (load.get(s) ?? 0) + 1)
            streams.find(x => x.name === s)!.findings.push(f)
          }
        }
      }
      for (const s of streams) report.streams[s.name] = s.experts
      Object.assign(summary, {
        mode: report.mode,
        streams: report.streams,
        capacity: report.capacity,
        findings: report.findings.map(f => f.key),
        suppressed: report.suppressed
      })

      const ctx: CycleContext = { cycle, signal, metrics, fallback: fb.active, checkpoint }
      // independent task streams run concurrently; no expert serves two of them
      const runs = streams.map(async s => { await this.runStream(s, ctx) })
      try {
        await Promise.all(runs)
      } catch (err) {
        ctrl.abort(err)
        await Promise.allSettled(runs)
        throw err
      }
      checkpoint()
      await this.audit(ctx, metrics.experts.map(e => e.id), report)
      checkpoint()
      report.state = 'done'
    } catch (err) {
      const h = this.haltReason
      if (h != null || err instanceof HaltedError || (signal.aborted && signal.reason instanceof HaltedError)) {
        report.state = 'halted'
        report.haltReason = h ?? (signal.reason instanceof HaltedError ? signal.reason.message : errorMessage(err))
      } else {
        report.state = 'failed'
        report.error = errorMessage(err)
      }
      this.log(`cycle ${cycle} ${report.state}: ${report.haltReason ?? report.error}`)
    } finally {
      if (this.ctrl === ctrl) this.ctrl = undefined
      report.endedAt = this.now()
      const ended = {
        ...summary,
        ...(report.haltReason != null ? { haltReason: report.haltReason } : {}),
        ...(report.error != null ? { error: report.error } : {})
      }
      store.endCycle(cycle, report.state as CycleState, report.mode, ended, report.endedAt)
      store.prune(report.endedAt)
    }
    report.stored = store.tasks.ofCycle(cycle)
    report.tasks = report.stored.map(taskView)
    return report
  }

  private async runStream (s: Stream, ctx: CycleContext): Promise<void> {
    for (const f of s.findings) {
      ctx.checkpoint()
      try {
        await this.propose(f, s, ctx)
      } catch (err) {
        if (err instanceof HaltedError || this.haltReason != null || ctx.signal.aborted) {
          throw (this.haltReason != null && !(err instanceof HaltedError) ? new HaltedError(`halted by governance: ${this.haltReason}`) : err)
        }
        // no generation possible (no experts, timeout, context too short): the finding is still recorded
        this.log(`proposal for ${f.key} failed (${errorMessage(err)}): deterministic task`)
        this.record(ctx, {
          domain: f.domains[0],
          title: f.title,
          rationale: f.summary,
          evidence: f.evidence,
          actions: [{ type: 'report', params: { title: f.title.slice(0, 200), body: f.summary } }]
        }, 'detector', f, { error: errorMessage(err), stream: s.name })
      }
    }
  }

  /** asks the mesh (the stream's experts) for a task answering the finding */
  private async propose (f: Finding, s: Stream, ctx: CycleContext): Promise<void> {
    const cfg = this.config
    const router = this.o.router
    const types = allowedActionTypes(f, ctx.fallback ? Tier.SUGGEST : Tier.DEPLOY_MAJOR)
    const schema = taskSchema({
      domains: f.domains,
      actionTypes: types,
      experts: f.experts.length > 0 ? f.experts : undefined,
      configKeys: f.configKeys,
      limits: cfg.limits
    })
    const prompt = buildPrompt(f, types)
    const promptTokens = router.tokenizer.encodePrompt(prompt).length
    const contextLengths = ctx.metrics.experts.filter(e => s.experts.includes(e.id) && e.contextLength != null).map(e => e.contextLength as number)
    const ctxLen = Math.min(...contextLengths, Infinity)
    const maxTokens = Math.min(cfg.maxTokens ?? 240, (Number.isFinite(ctxLen) ? ctxLen : 512) - promptTokens - 2)
    const constraint = new JsonConstraint(schema, tokenizerPieceTable(router.tokenizer), maxTokens)
    const complexity = complexityOf(f.evidence.length, types.length)
    const k = ctx.fallback ? 1 : fractalK({ baseK: cfg.k ?? 3, priority: priorityOf(f.severity), complexity, available: s.experts.length })
    const timeout = AbortSignal.timeout(cfg.generateTimeoutMs ?? 120_000)
    const t0 = performance.now()
    const result = await router.generate(prompt, {
      constrain: constraint.constrain,
      temperature: cfg.temperature ?? 0,
      ...(cfg.seed != null ? { seed: cfg.seed } : {}),
      maxTokens,
      k,
      ...(s.experts.length > 0 ? { experts: s.experts } : {}),
      signal: AbortSignal.any([ctx.signal, timeout])
    })
    ctx.checkpoint()
    let raw = result.text
    let parsed: unknown
    try {
      parsed = JSON.parse(raw)
    } catch {
      raw = constraint.follow(result.tokenIds).text
      parsed = JSON.parse(raw)
    }
    const t = checkTaskShape(parsed)
    const limits = { ...DEFAULT_LIMITS, ...cfg.limits }
    const filled: string[] = []
    const ev = mergeEvidence(t.evidence, f.evidence, limits.evidenceItems)
    if (ev.filled > 0) filled.push(`evidence (${ev.filled} detector line(s))`)
    let title = t.title.trim()
    if (!meaningful(title)) { title = f.title; filled.push('title') }
    let rationale = t.rationale.trim()
    if (!meaningful(rationale)) { rationale = f.summary; filled.push('rationale') }
    // the same action twice is one action
    const actions = t.actions.filter((a, i) => t.actions.findIndex(b => canonicalJson(b) === canonicalJson(a)) === i)
    this.record(ctx, { domain: t.domain, title, rationale, evidence: ev.evidence, actions }, 'mesh', f, {
      stream: s.name,
      experts: result.experts,
      k: result.effectiveK,
      tokens: result.tokens,
      promptTokens: result.promptTokens,
      maxTokens,
      finishReason: result.finishReason,
      ms: Math.round(performance.now() - t0),
      forcedSteps: constraint.stats.forced,
      filled,
      raw: raw.slice(0, 4000)
    })
  }

  /** classifies and gates every action, runs the read-only ones, stores the task (its state: its actions' worst, src/tasks/model.ts) */
  private record (
    ctx: CycleContext,
    t: { domain: string, title: string, rationale: string, evidence: string[], actions: ProposedAction[] },
    source: string,
    f: Finding | undefined,
    meta: Record<string, unknown>
  ): TaskRecord {
    const snapshot = this.o.governance?.state.snapshot() ?? { phase: 0, readOnly: false }
    const gctx = gateContext(snapshot, this.now())
    const outputs: string[] = []
    const actions: TaskAction[] = t.actions.map((a): TaskAction => {
      const action = { type: a.type, params: a.params }
      const c = classifyAction(action)
      const d = gate(action, gctx)
      let state: ActionState
      let reason = d.reason
      let needs = d.needs
      if (!c.known) state = 'rejected'
      else if (ctx.fallback && c.tier > Tier.SUGGEST) {
        state = 'blocked'
        reason = `${Tier[c.tier]}: centralised fallback: only read-only and suggest actions`
        needs = [`${this.fallback.minExperts} experts online`]
      } else if (!d.allowed) state = 'blocked'
      else if (c.tier === Tier.READ_ONLY && d.executeNow) {
        outputs.push(this.runReadOnly(action, t, f, ctx.metrics))
        state = 'executed'
      } else if (c.tier >= Tier.DEPLOY_MINOR) state = 'awaiting_quorum'
      else state = 'awaiting_review' // SUGGEST and SANDBOX_TEST: never on their own
      return { type: a.type, params: a.params, tier: Tier[c.tier], known: c.known, state, reason, needs }
    })
    return this.store.tasks.addAgentTask({
      cycle: ctx.cycle,
      domain: t.domain,
      title: t.title,
      rationale: t.rationale,
      evidence: t.evidence,
      actions,
      priority: f != null ? SEVERITY_PRIORITY[f.severity] : 0,
      ...(outputs.length > 0 ? { output: outputs.join('\n\n') } : {}),
      source,
      ...(f != null ? { findingKey: f.key } : {}),
      meta
    }, this.now())
  }

  /** the only actions the agent runs: read-only reports (a text report of the finding and the metrics) */
  private runReadOnly (
    action: { type: string, params: Record<string, unknown> },
    t: { title: string, evidence: string[] },
    f: Finding | undefined,
    m: MeshMetrics
  ): string {
    if (action.type !== 'report') return `${action.type}: nothing to run`
    const p = action.params
    const lines = [`# ${String(p.title ?? t.title)}`]
    if (typeof p.body === 'string' && p.body.length > 0) lines.push('', p.body)
    if (f != null) lines.push('', `finding: ${f.kind} (${f.severity}): ${f.title}`)
    lines.push('', 'evidence:', ...t.evidence.map(e => `- ${e}`))
    const g = m.governance
    const bytes = m.bytesPerExpertToken != null ? m.bytesPerExpertToken.toFixed(0) : '–'
    const tps = m.tokensPerSecond != null ? m.tokensPerSecond.toFixed(1) : '–'
    lines.push('', `metrics: ${m.experts.length} experts online; ${bytes} bytes per expert per token; ${tps} tokens/s; ` +
      `governance version ${g.version}, phase ${g.phase}, ${g.halted ? 'HALTED' : 'running'}${g.readOnly ? ' (read-only)' : ''}, ` +
      `rejected ${g.rejected.forged} forged / ${g.rejected.replay} replayed; DHT routing table ${m.dht.routingTableSize}`)
    return lines.join('\n')
  }

  /** the security audit: spot checks and governance consistency, one read-only report task */
  private async audit (ctx: CycleContext, experts: string[], report: CycleReport): Promise<void> {
    const cfg = this.config
    const checks: SpotCheck[] = []
    for (const [a, b] of spotCheckPairs(experts, ctx.cycle, cfg.spotCheckPairs ?? 1)) {
      ctx.checkpoint()
      const prompt = AUDIT_PROMPTS[ctx.cycle % AUDIT_PROMPTS.length]
      checks.push(await spotCheck(this.o.router, a, b, { prompt, tokens: cfg.spotCheckTokens ?? 4, signal: ctx.signal, divergentTv: cfg.divergentTv }))
    }
    ctx.checkpoint()
    const gov = this.o.governance
    const govChecks = gov != null
      ? await checkGovernancePeers(gov, await governancePeers(gov, cfg.auditPeers ?? 8, experts), {
        signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(cfg.auditTimeoutMs ?? 3_000)])
      })
      : []
    ctx.checkpoint()
    report.audit = { spotChecks: checks, governance: govChecks }
    const local = gov?.state.snapshot()
    const evidence: string[] = []
    for (const c of checks) {
      if (c.error != null) evidence.push(`spot check ${c.a} vs ${c.b}: failed: ${c.error.slice(0, 100)}`)
      else {
        evidence.push(`spot check ${c.a} vs ${c.b}: top-token agreement ${Math.round(c.agreement * c.positions)}/${c.positions}, ` +
          `mean TV distance ${c.meanTv.toFixed(3)}${c.divergent ? ': DIVERGENT' : ''}`)
      }
    }
    if (local != null) evidence.push(`local governance: version ${local.version}, ${local.halted != null ? 'halted' : 'not halted'}, phase ${local.phase}`)
    for (const g of govChecks) {
      if (g.error != null) evidence.push(`peer ${g.peer}: governance sync failed: ${g.error.slice(0, 100)}`)
      else {
        const forged = (g.forged ?? 0) > 0 ? `, ${g.forged} forged envelope(s) served` : ''
        evidence.push(`peer ${g.peer}: governance version ${g.version}, ${g.halted === true ? 'halted' : 'not halted'}, phase ${g.phase}${forged}: ` +
          (g.consistent ? 'consistent' : 'INCONSISTENT'))
      }
    }
    const issues = checks.filter(c => c.divergent).length + govChecks.filter(g => !g.consistent).length
    const title = `security audit, cycle ${ctx.cycle}: ${issues === 0 ? 'no issue' : `${issues} issue(s)`}`
    this.record(ctx, {
      domain: 'security',
      title,
      rationale: `Every cycle: ${checks.length} expert spot check(s) (same positions, temperature 0) ` +
        `and the governance state of ${govChecks.length} peer(s) compared with this node's.`,
      evidence,
      actions: [{ type: 'report', params: { title, body: evidence.join('\n').slice(0, 65536) } }]
    }, 'audit', undefined, { spotChecks: checks, governance: govChecks })
  }
}
