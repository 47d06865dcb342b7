/**
 * The governance topic's gossipsub peer-score parameters, and the one place that sets them
 * on a running gossipsub (its internals: GossipsubInternalsChangedError when they move).
 */
import type { GossipSub } from '@libp2p/gossipsub'

/**
 * gossipsub topic score parameters of the governance topic: a delivery the validator
 * Rejects (a forgery) costs the sender -100 × (invalid deliveries)², so one forgery puts it
 * below the graylist threshold (-80: everything it sends is ignored) for ≈ 11 s, ten for
 * ≈ 4 min (decay 0.99 per second). The topic is nearly silent by design, so the delivery
 * rate terms (P2, P3, P3b) are off: honest quiet peers are never penalised.
 */
export const GOVERNANCE_TOPIC_SCORE = {
  topicWeight: 1,
  timeInMeshWeight: 0,
  timeInMeshQuantum: 1000,
  timeInMeshCap: 1,
  firstMessageDeliveriesWeight: 0,
  firstMessageDeliveriesDecay: 0.5,
  firstMessageDeliveriesCap: 1,
  meshMessageDeliveriesWeight: 0,
  meshMessageDeliveriesDecay: 0.5,
  meshMessageDeliveriesCap: 1,
  meshMessageDeliveriesThreshold: 1,
  meshMessageDeliveriesWindow: 10,
  meshMessageDeliveriesActivation: 5000,
  meshFailurePenaltyWeight: 0,
  meshFailurePenaltyDecay: 0.5,
  invalidMessageDeliveriesWeight: -100,
  invalidMessageDeliveriesDecay: 0.99
}

/**
 * Gives a topic its score parameters on a running gossipsub. @libp2p/gossipsub takes topic
 * score parameters only at construction and reads them lazily from its PeerScore's params,
 * so the governance topic (known only once the governance file is read) is added there.
 * The one place that touches gossipsub's internals; test/adversarial/governance.spec.ts
 * fails if it stops working (a forger's score must drop below the graylist threshold).
 */
export function scoreTopic (pubsub: GossipSub, topic: string, params: typeof GOVERNANCE_TOPIC_SCORE): void {
  const topics = (pubsub as unknown as { score?: { params?: { topics?: Record<string, unknown> } } }).score?.params?.topics
  if (topics == null || typeof topics !== 'object') throw new GossipsubInternalsChangedError('gossipsub has no peer-score parameters to extend (dependency changed?)')
  topics[topic] ??= { ...params }
}

/** @libp2p/gossipsub no longer has the peer-score internals scoreTopic extends */
export class GossipsubInternalsChangedError extends Error {
  static override name = 'GossipsubInternalsChangedError'
  override name = 'GossipsubInternalsChangedError'
}
