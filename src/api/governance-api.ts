/**
 * The governance facade of the API: halt state, the governance state GetGovernanceState and
 * the dashboard show, the log of governance messages this node saw, and relaying
 * keyholder-signed envelopes (HaltMesh, RelayGovernanceMessage).
 */
import { FORGERY_CODES as FORGERY } from '../governance/service.js'
import { Kind, decodeEnvelope } from '../governance/envelope.js'
import { configDigest } from '../governance/config.js'
import { formatPublicKey } from '../governance/keys.js'
import { PHASES } from '../governance/tiers.js'
import type { GovernanceSnapshot } from '../governance/state.js'
import { ApiError, invalid } from './errors.js'
import type { ApiContext, GovernanceEventInfo, GovernanceStateInfo, HaltInfo, RelayResult } from './types.js'
import { errorMessage } from '../util/errors.js'

/** governance events kept for GetGovernanceState.recent */
const LOG_SIZE = 50

export class GovernanceApi {
  private readonly log: GovernanceEventInfo[] = []
  private relayVia?: string

  constructor (private readonly ctx: ApiContext) {}

  /** called by MeshApi for every change the governance service applies */
  onChange (snap: GovernanceSnapshot, kind: Kind): void {
    if (this.ctx.closed()) return
    this.record({ atMs: Date.now(), kind: Kind[kind], version: snap.version, accepted: true, detail: describe(kind, snap), via: this.relayVia ?? 'gossip' })
  }

  /** the governance service's halt reason, when the mesh is halted */
  haltReason (): string | undefined {
    return this.ctx.governance?.haltReason
  }

  /** FAILED_PRECONDITION mesh_halted while the mesh is halted */
  checkHalt (): void {
    const reason = this.haltReason()
    if (reason != null) throw new ApiError('failed_precondition', `halted by governance: ${reason}`, null, 'mesh_halted')
  }

  haltState (): HaltInfo {
    const h = this.ctx.governance?.state.halted
    return { halted: h != null, reason: h?.reason ?? '', version: h?.version ?? 0, atMs: h?.atMs ?? 0 }
  }

  private record (e: GovernanceEventInfo): void {
    this.log.unshift(e)
    if (this.log.length > LOG_SIZE) this.log.pop()
    this.ctx.events.emit('governance', e)
  }

  state (): GovernanceStateInfo {
    const g = this.ctx.governance
    if (g == null) {
      return {
        meshId: '',
        version: 0,
        halt: this.haltState(),
        readOnly: false,
        phase: 0,
        phaseName: PHASES[0].name,
        keyholders: [],
        configDigest: '',
        recent: this.log
      }
    }
    const st = g.state
    const snap = st.snapshot()
    const hs = (h: { version: number, reason: string, atMs: number } | undefined): HaltInfo =>
      ({ halted: h != null, reason: h?.reason ?? '', version: h?.version ?? 0, atMs: h?.atMs ?? 0 })
    return {
      meshId: snap.meshId,
      version: snap.version,
      halt: hs(snap.halted),
      readOnly: snap.readOnly,
      phase: snap.phase,
      phaseName: PHASES[snap.phase]?.name ?? '',
      keyholders: st.config.keyholders.map(k => formatPublicKey(k.publicKey)),
      thresholds: { ...st.config.thresholds },
      configDigest: configDigest(st.config),
      rejected: { ...st.rejected },
      lastHalt: snap.lastHalt != null ? { ...hs(snap.lastHalt), halted: snap.halted != null } : undefined,
      lastResumeAtMs: snap.lastResumeAtMs ?? 0,
      recent: [...this.log]
    }
  }

  /**
   * Relays a keyholder-signed envelope: verified and applied here, then gossiped. `haltOnly`:
   * HaltMesh, where anything that is not an accepted HALT is PERMISSION_DENIED.
   */
  async relay (bytes: Uint8Array, via: string, haltOnly: boolean): Promise<RelayResult> {
    const g = this.ctx.governance
    if (g == null) throw new ApiError('failed_precondition', 'this node runs no governance service', null, 'no_governance')
    const deny = (reason: string, kind = 'UNKNOWN', version = 0, forged = true): ApiError => {
      this.record({ atMs: Date.now(), kind, version, accepted: false, detail: reason, via })
      // a forgery is PERMISSION_DENIED; a genuine message that is stale, expired or early
      // here is FAILED_PRECONDITION: either way the caller learns it was NOT applied
      return new ApiError(forged ? 'permission_denied' : 'failed_precondition', `governance message rejected: ${reason}`, 'envelope', 'governance_rejected')
    }
    if (!(bytes instanceof Uint8Array) || bytes.length === 0) {
      if (haltOnly) throw deny('empty envelope: a HALT must be signed by a keyholder')
      throw invalid('envelope is required (a signed governance envelope)', 'envelope')
    }
    let kind: string
    let version: number
    try {
      const env = decodeEnvelope(bytes)
      kind = Kind[env.message.kind]
      version = env.message.version
    } catch (err) {
      if (haltOnly) throw deny(`malformed: ${errorMessage(err)}`)
      throw invalid(`malformed governance envelope: ${errorMessage(err)}`, 'envelope')
    }
    if (haltOnly && kind !== 'HALT') throw deny(`a ${kind} envelope, not a HALT: use RelayGovernanceMessage`, kind, version)
    this.relayVia = via
    let r
    try {
      r = await g.submit(bytes)
    } finally {
      this.relayVia = undefined
    }
    if (!r.applied) throw deny(`${r.code}: ${r.reason}`, kind, version, FORGERY.has(r.code ?? 'malformed'))
    const refused = Object.entries(r.peers).filter(([a]) => a !== 'applied' && a !== 'known' && a !== 'no-answer').reduce((n, [, c]) => n + (c ?? 0), 0)
    return {
      accepted: true,
      kind,
      version,
      recipients: r.gossipRecipients,
      peersApplied: (r.peers.applied ?? 0) + (r.peers.known ?? 0),
      peersRefused: refused,
      state: this.state()
    }
  }
}

function describe (kind: Kind, snap: GovernanceSnapshot): string {
  switch (kind) {
    case Kind.HALT: return snap.halted?.reason ?? ''
    case Kind.RESUME: return 'resumed (read-only until a PHASE vote)'
    case Kind.PHASE: return `phase ${snap.phase}`
    case Kind.VOTE: return 'vote'
    case Kind.KEYHOLDERS: return 'keyholder set changed'
    default: return ''
  }
}
