/**
 * What a generation (src/router/generation.ts) works with: its router's shared parts
 * (RouterCore), its candidate experts and how it chooses among them (src/router/selection.ts:
 * the policy, the Sybil colocation penalty by observed address group, health with a latency
 * prior that a claim cannot make better than a measurement), the per-step deadline, and the
 * check every frame an expert sends must pass.
 */
import type { Logger } from '@libp2p/interface'
import type { MeshNode } from '../node/node.js'
import type { ExpertRecord } from '../wire/record.js'
import type { Frame } from '../wire/types.js'
import type { AbortOptions, PeerId } from '@libp2p/interface'
import type { ExpertHaltedError, ExpertSession } from './expert-client.js'
import { LruMap, MAX_TRACKED_EXPERTS, type ExpertHealth, type HealthTable } from './health.js'
import { invalidFrame, type ReputationTable } from './reputation.js'
import type { ExpertMemory } from './online-weights.js'
import type { RouterTokenizer } from './tokenizer.js'
import type { RouterObserver, RouterOptions } from './router.js'
import { addressGroup, colocationFactors, observedGroups, selectExperts, type SelectionPolicy } from './selection.js'

/** what a generation uses of its router (Router builds it; none of it is Router's public API) */
export interface RouterCore {
  readonly node: MeshNode
  readonly tokenizer: RouterTokenizer
  readonly health: HealthTable
  readonly reputation: ReputationTable
  readonly log: Logger
  readonly options: RouterOptions
  readonly observers: Set<RouterObserver>
  readonly stats: { generations: number, tokens: number, bytes: number, expertSteps: number, lastTokensPerSecond: number }
  /**
   * speculative draft tokens accepted and rejected by this router's generations, decayed
   * (src/router/generation.ts), per kind of draft ('greedy' at temperature 0, else 'sampled'):
   * a generation starts from what the ones before it measured
   */
  readonly acceptance: Map<'greedy' | 'sampled', { accepted: number, rejected: number }>
  /** the 'online' weighting's memory of each expert across this router's generations (src/aggregate/weighting.ts) */
  readonly expertMemory: ExpertMemory
  /** selectable: circuit closed or half-open, and not banned */
  available: (id: string) => boolean
  /** throws HaltedError while the router's own governance is halted */
  checkHalt: () => void
  notify: <K extends keyof RouterObserver>(name: K, ev: Parameters<NonNullable<RouterObserver[K]>>[0]) => void
  /** an expert's HALTED: HaltedError when the router's governance verified it, else that expert's failure */
  expertHalted: (err: ExpertHaltedError) => Promise<Error>
  /** known experts (Router.experts): at least `want` sought when fewer are known, waiting for `first` of them */
  experts: (force: boolean, signal: AbortSignal, want?: number, first?: number) => Promise<{ compatible: ExpertRecord[], incompatible: ExpertRecord[] }>
  /** the compatible experts known right now (no discovery): what a background discovery added since */
  known: () => ExpertRecord[]
  /** a session with an expert: in process for this node's own expert (RouterOptions.local), else dialled */
  connect: (peerId: PeerId, options: AbortOptions) => Promise<ExpertSession>
}

/** RouterOptions.discoverySample's default: experts one discovery fetches, and one generation chooses among */
export const DEFAULT_DISCOVERY_SAMPLE = 32

/** the address group of this node's own expert (in process: observed by nobody, trusted by this node) */
const LOCAL_GROUP = 'local'

/** a frame that decoded but fails invalidFrame(): a failure of the expert that sent it */
export class InvalidFrameError extends Error {
  override name = 'InvalidFrameError'
}

/** a frame an expert sent for `position`: the one asked for, and valid (else that expert's failure) */
export function checkFrame (frame: Frame, position: number, vocabSize: number): void {
  if (frame.position !== position) throw new Error(`frame for position ${frame.position}, expected ${position}`)
  const bad = invalidFrame(frame, vocabSize)
  if (bad != null) throw new InvalidFrameError(`invalid frame: ${bad}`)
}

/** one expert a generation may use, and its session once opened */
export interface Candidate {
  record: ExpertRecord
  id: string
  session?: ExpertSession
  /** a request is in flight on this session */
  pending?: Promise<void>
  failed?: boolean
  /** answered BUSY: not asked again before this time (performance.now() ms) */
  busyUntil?: number
  /** BUSY answers in a row (the backoff doubles with each) */
  busyCount?: number
}

export interface Selection {
  select: (pool: Candidate[], n: number) => Candidate[]
  /** health as selection sees it now (the measured-median floor computed once per call) */
  health: () => (c: Candidate) => ExpertHealth
  /** colocation multiplier per expert id */
  colocation: Map<string, number>
}

/**
 * How one generation chooses among its candidates: the policy, the Sybil colocation penalty
 * by address group (computed once per generation from the remote addresses of the open
 * connections only, never from what a record claims; experts without a connection form one
 * "unverified" group), and health where an unmeasured expert's latency prior (its advertised
 * speed) is never better than the median measured latency of the others: a claim cannot
 * outweigh a measurement.
 */
export function candidateSelection (node: MeshNode, health: HealthTable, candidates: Candidate[], opts: { policy?: SelectionPolicy, colocationThreshold?: number, localId?: string } = {}): Selection {
  const seen = observedAddressGroups(node)
  // this node's own expert has no connection: it is a group of its own, never "unverified"
  const groups = observedGroups(candidates.map(c => c.id === opts.localId
    ? { id: c.id, connections: [], lastObserved: LOCAL_GROUP }
    : { id: c.id, connections: node.getConnections(c.record.peerId), lastObserved: seen.peek(c.id) }))
  const factors = colocationFactors(groups, opts.colocationThreshold)
  const healthOf = (c: Candidate, floor = 0): ExpertHealth => {
    const h = health.get(c.id, priorLatency(c.record))
    return h.samples > 0 ? h : { ...h, latencyMs: Math.max(priorLatency(c.record), floor) }
  }
  const measuredMedian = (): number => {
    const m: number[] = []
    for (const c of candidates) { const h = health.peek(c.id); if (h != null && h.samples > 0) m.push(h.latencyMs) }
    m.sort((a, b) => a - b)
    return m.length > 0 ? m[(m.length - 1) >> 1] : 0
  }
  return {
    colocation: factors,
    health: () => { const floor = measuredMedian(); return (c) => healthOf(c, floor) },
    select: (pool, n) => {
      const floor = measuredMedian()
      return selectExperts(pool, n, c => healthOf(c, floor), c => c.record, { policy: opts.policy, colocation: c => factors.get(c.id) ?? 1 }, Math.random)
    }
  }
}

/**
 * per-step deadline: a multiple of the chosen experts' lower-median latency EWMA (the
 * slower half, a stalling expert included, cannot hold the step: it is hedged and dropped)
 */
export function stepDeadline (chosen: Candidate[], sel: Selection, minStepDeadlineMs = 1_500): number {
  const healthNow = sel.health()
  const lats = chosen.map(c => healthNow(c).latencyMs).sort((a, b) => a - b)
  const lat = lats[(lats.length - 1) >> 1]
  return Math.max(minStepDeadlineMs, 4 * lat + 100)
}

/** traffic of each expert session the candidates opened (both directions, framing included) */
export function sessionTraffic (candidates: Candidate[]): Array<{ expert: string, bytes: number, frames: number }> {
  const out: Array<{ expert: string, bytes: number, frames: number }> = []
  for (const c of candidates) {
    if (c.session == null) continue
    out.push({ expert: c.id, bytes: c.session.bytesSent + c.session.bytesReceived, frames: c.session.frames })
  }
  return out
}

/**
 * Per node (shared by its routers): peer id → address group of the last connection this node
 * had with it, open or since closed (a connection's remote address is an observation; a
 * record's is a claim). Bounded; filled from every connection the node opens or accepts.
 */
const observedByNode = new WeakMap<MeshNode, LruMap<string, string>>()
export function observedAddressGroups (node: MeshNode): LruMap<string, string> {
  let m = observedByNode.get(node)
  if (m == null) {
    const map = new LruMap<string, string>(MAX_TRACKED_EXPERTS)
    const note = (conn: { remotePeer: { toString: () => string }, remoteAddr: Parameters<typeof addressGroup>[0] }): void => {
      const g = addressGroup(conn.remoteAddr)
      if (g != null) map.set(conn.remotePeer.toString(), g)
    }
    for (const conn of node.getConnections()) note(conn)
    node.addEventListener('connection:open', (e) => { note(e.detail) })
    observedByNode.set(node, map)
    m = map
  }
  return m
}

function priorLatency (r: ExpertRecord): number {
  return r.tokensPerSecond > 0 ? 1000 / r.tokensPerSecond + 5 : 100
}

/**
 * The experts one generation chooses among, at most `n` of the known ones: this node's own
 * expert first, then those this router measured and may use (fastest first), then unmeasured
 * ones at random, and those it may not use now (open circuit, banned) last. A generation needs
 * K experts and a few spare, not the whole mesh: selection, screening and the step deadline
 * then cost O(n), not O(N).
 */
export function candidatePool (records: ExpertRecord[], n: number, health: HealthTable, available: (id: string) => boolean, localId?: string): ExpertRecord[] {
  if (records.length <= n) return records
  const rank = records.map(r => {
    const id = r.peerId.toString()
    const h = health.peek(id)
    const group = id === localId ? 0 : !available(id) ? 3 : h != null && h.samples > 0 ? 1 : 2
    return { r, group, key: group === 1 ? (h?.latencyMs ?? 0) : Math.random() }
  })
  rank.sort((a, b) => a.group - b.group || a.key - b.key)
  return rank.slice(0, n).map(x => x.r)
}
