/**
 * The security audit that runs every cycle (read-only):
 *
 * - Spot checks: expert A generates a few tokens alone (`experts: [A], k: 1`, temperature 0);
 *   expert B is then asked for the SAME positions: the same prompt, with A's tokens forced
 *   through the router's `constrain` hook (teacher forcing). At every position the hook sees
 *   each expert's own distribution (an aggregate of one frame), so the two are compared
 *   position by position: top-token agreement and total-variation distance. An expert whose
 *   distributions are nearly disjoint from its peer's (TV ≥ the threshold) is reported.
 * - Governance consistency: every peer speaking /meshllm/gov-sync is caught up into a FRESH
 *   in-memory GovernanceState (GovernanceService.syncFrom on a probe service that is never
 *   started) and its accepted version, halt and phase are compared with this node's.
 *   Envelopes the probe rejects as forged are reported too.
 */
import type { AbortOptions, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Aggregated } from '../aggregate/types.js'
import type { Router } from '../router/router.js'
import { GOV_SYNC_PROTOCOL, GovernanceService } from '../governance/service.js'
import { GovernanceState } from '../governance/state.js'
import { HaltedError, errorMessage } from '../util/errors.js'

export interface SpotCheck {
  a: string
  b: string
  positions: number
  /** share of positions where both experts' most probable token is the same */
  agreement: number
  /** mean total-variation distance between their distributions (0 same … 1 disjoint) */
  meanTv: number
  divergent: boolean
  error?: string
}

/** total-variation distance of two aggregated distributions over the same vocabulary */
export function tvDistance (p: Aggregated, q: Aggregated): number {
  const mp = new Map<number, number>()
  const mq = new Map<number, number>()
  p.ids.forEach((id, i) => mp.set(id, p.probs[i]))
  q.ids.forEach((id, i) => mq.set(id, q.probs[i]))
  const restP = p.restCount > 0 ? p.restProb : 0
  const restQ = q.restCount > 0 ? q.restProb : 0
  const union = new Set<number>([...mp.keys(), ...mq.keys()])
  let sum = 0
  for (const id of union) sum += Math.abs((mp.get(id) ?? restP) - (mq.get(id) ?? restQ))
  const vocab = Math.max(p.ids.length + p.restCount, q.ids.length + q.restCount)
  sum += Math.max(0, vocab - union.size) * Math.abs(restP - restQ)
  return Math.min(1, sum / 2)
}

const top = (a: Aggregated): number => a.ids.length > 0 ? a.ids[0] : -1

export async function spotCheck (
  router: Router,
  a: string,
  b: string,
  o: { prompt: string, tokens?: number, signal?: AbortSignal, divergentTv?: number }
): Promise<SpotCheck> {
  const n = Math.max(1, o.tokens ?? 4)
  const distA: Aggregated[] = []
  const distB: Aggregated[] = []
  const tokens: number[] = []
  const base = { k: 1, maxTokens: n, temperature: 0, ignoreEos: true, signal: o.signal }
  try {
    await router.generate(o.prompt, { ...base, experts: [a], constrain: (agg) => { distA.push(agg); return agg }, onToken: (ev) => { tokens.push(ev.token) } })
    if (tokens.length === 0) throw new Error(`expert ${a} produced no token`)
    await router.generate(o.prompt, {
      ...base,
      maxTokens: tokens.length,
      experts: [b],
      constrain: (agg, generated) => {
        distB.push(agg)
        return { ids: Uint32Array.of(tokens[generated.length]), probs: Float64Array.of(1), restProb: 0, restCount: 0 }
      }
    })
  } catch (err) {
    if (err instanceof HaltedError || o.signal?.aborted === true) throw err
    return { a, b, positions: 0, agreement: 0, meanTv: 0, divergent: false, error: errorMessage(err) }
  }
  const m = Math.min(distA.length, distB.length)
  let agree = 0
  let tv = 0
  for (let i = 0; i < m; i++) {
    if (top(distA[i]) === top(distB[i])) agree++
    tv += tvDistance(distA[i], distB[i])
  }
  const meanTv = m > 0 ? tv / m : 0
  return { a, b, positions: m, agreement: m > 0 ? agree / m : 0, meanTv, divergent: m > 0 && meanTv >= (o.divergentTv ?? 0.98) }
}

/** the spot-check pairs of a cycle: consecutive experts of a rotating order */
export function spotCheckPairs (experts: readonly string[], cycle: number, pairs: number): Array<[string, string]> {
  const xs = [...experts].sort()
  if (xs.length < 2 || pairs <= 0) return []
  const out: Array<[string, string]> = []
  for (let i = 0; i < Math.min(pairs, xs.length); i++) {
    const j = (cycle + i) % xs.length
    out.push([xs[j], xs[(j + 1) % xs.length]])
  }
  return out
}

export interface GovPeerCheck {
  peer: string
  version?: number
  halted?: boolean
  phase?: number
  /** envelopes from this peer our probe rejected as forged */
  forged?: number
  consistent: boolean
  error?: string
}

/**
 * Peers to audit (at most `limit`): the connected peers that speak the governance catch-up
 * protocol, then `extra` peers (the experts online, connected or not) unless the peer store
 * knows they do not speak it.
 */
export async function governancePeers (gov: GovernanceService, limit = 8, extra: readonly string[] = []): Promise<PeerId[]> {
  const out: PeerId[] = []
  const seen = new Set<string>()
  const speaks = async (p: PeerId, unknown: boolean): Promise<boolean> => {
    try {
      const info = await gov.components.peerStore.get(p)
      return info.protocols.includes(GOV_SYNC_PROTOCOL) || (unknown && info.protocols.length === 0)
    } catch {
      return unknown
    }
  }
  const candidates: Array<{ p: PeerId, unknown: boolean }> = connectedPeers(gov).map(p => ({ p, unknown: false }))
  for (const id of extra) {
    try { candidates.push({ p: peerIdFromString(id), unknown: true }) } catch {}
  }
  for (const { p, unknown } of candidates) {
    if (out.length >= limit) break
    const key = p.toString()
    if (seen.has(key) || p.equals(gov.components.peerId)) continue
    seen.add(key)
    if (await speaks(p, unknown)) out.push(p)
  }
  return out
}

/**
 * Catches each peer up into a fresh in-memory state and compares it with ours. Our own log
 * replayed into a fresh state is the baseline of rejections (e.g. a keyholder change that
 * the starting config cannot verify): only a peer's rejections above it count as forged.
 */
/** checkGovernancePeers: the caller's signal bounds every peer's check (default: 3 s) */
export async function checkGovernancePeers (gov: GovernanceService, peers: readonly PeerId[], o: AbortOptions = {}): Promise<GovPeerCheck[]> {
  const local = gov.state.snapshot()
  const self = new GovernanceState(gov.state.config)
  for (const b of gov.state.catchUp()) await self.apply(b, { catchUp: true })
  const baseline = self.rejected.forged
  return await Promise.all(peers.map(async (peer): Promise<GovPeerCheck> => {
    const probe = new GovernanceService(gov.components, { state: new GovernanceState(gov.state.config) })
    const signal = o.signal ?? AbortSignal.timeout(3_000)
    try {
      await probe.syncFrom(peer, { signal })
      const s = probe.state.snapshot()
      const consistent = s.version === local.version && (s.halted?.version ?? 0) === (local.halted?.version ?? 0) && s.phase === local.phase
      const forged = Math.max(0, probe.state.rejected.forged - baseline)
      return { peer: peer.toString(), version: s.version, halted: s.halted != null, phase: s.phase, forged, consistent: consistent && forged === 0 }
    } catch (err) {
      return { peer: peer.toString(), consistent: false, error: errorMessage(err) }
    }
  }))
}

/** the peers `gov`'s node is connected to, in connection order */
function connectedPeers (gov: GovernanceService): PeerId[] {
  return gov.components.connectionManager.getConnections().map(c => c.remotePeer)
}
