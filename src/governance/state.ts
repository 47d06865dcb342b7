/**
 * The governance state of one node: halt state, rollout phase, read-only-after-halt mode,
 * the current keyholder config, the highest accepted version and vote records. Only this
 * module writes it; it is persisted (atomically, before a message is accepted) so a
 * replayed or older message is rejected after restarts and after gossipsub's seen-cache
 * forgot it, and a halted node stays halted across restarts.
 */
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, open, rename } from 'node:fs/promises'
import { dirname } from 'node:path'
import { configToJson, parseConfig, type GovernanceConfig } from './config.js'
import { Kind, decodeEnvelope, inspectEnvelope, verifySigners, type Envelope, type RefusalCode, type Verdict } from './envelope.js'
import { keyHex } from './keys.js'

export interface HaltInfo {
  version: number
  reason: string
  atMs: number
}

export interface VoteRecord {
  version: number
  approve: boolean
  atMs: number
}

export interface GovernanceSnapshot {
  meshId: string
  version: number
  halted?: HaltInfo
  /** after a RESUME the mesh stays read-only until a PHASE vote */
  readOnly: boolean
  phase: number
  lastHalt?: HaltInfo
  lastResumeAtMs?: number
}

export type ApplyResult =
  /** noop: a RESUME taken while nothing was halted here (a version step, nothing lifted) */
  | { accepted: true, kind: Kind, envelope: Envelope, noop?: true }
  | { accepted: false, code: RefusalCode, reason: string, envelope?: Envelope }

const STATE_LOG_MAX = 32

const VOTE_LOG_MAX = 512

export class GovernanceState {
  config: GovernanceConfig
  version = 0
  halted?: HaltInfo
  lastHalt?: HaltInfo
  lastResumeAtMs?: number
  readOnly = false
  phase = 0
  /** the keyholder set was changed by a KEYHOLDERS message (then the chain, not the file, is authoritative) */
  private configFromChain = false
  /** motion id hex → keyholder key hex → vote */
  readonly votes = new Map<string, Map<string, VoteRecord>>()
  /** accepted envelopes, for peers that catch up */
  private stateLog: Uint8Array[] = []
  private voteLog: Uint8Array[] = []
  /** every accepted KEYHOLDERS change and the HALT in force: never dropped from catch-up */
  private keyholderLog: Uint8Array[] = []
  private haltEnvelopeBytes?: Uint8Array
  /** messages rejected, by reason class (for metrics and the agent's security audit) */
  readonly rejected = { forged: 0, replay: 0, malformed: 0, other: 0 }
  /** Ed25519 verifications this state made */
  readonly verifications = { count: 0 }

  constructor (config: GovernanceConfig, private readonly file?: string, private readonly now: () => number = Date.now) {
    this.config = config
    if (file != null && existsSync(file)) this.load(file)
  }

  snapshot (): GovernanceSnapshot {
    return {
      meshId: this.config.meshId,
      version: this.version,
      halted: this.halted,
      readOnly: this.readOnly,
      phase: this.phase,
      lastHalt: this.lastHalt,
      lastResumeAtMs: this.lastResumeAtMs
    }
  }

  get haltReason (): string | undefined {
    return this.halted?.reason
  }

  /** envelopes a catching-up peer needs: accepted state messages, then votes */
  catchUp (): Uint8Array[] {
    const state = [...new Set<Uint8Array>([...this.keyholderLog, ...(this.haltEnvelopeBytes != null ? [this.haltEnvelopeBytes] : []), ...this.stateLog])]
    const version = (b: Uint8Array): number => { try { return decodeEnvelope(b).message.version } catch { return 0 } }
    state.sort((a, b) => version(a) - version(b))
    return [...state, ...this.voteLog]
  }

  /** the signed HALT envelope in force (experts show it to routers that have not heard of it) */
  get haltEnvelope (): Uint8Array | undefined {
    return this.halted != null ? this.haltEnvelopeBytes : undefined
  }

  /**
   * Verifies and applies one envelope. Never throws. Persisted before returning accepted.
   * Order of checks, cheapest first: structure, mesh, time window, signer set and counts
   * (inspectEnvelope), then staleness against this node's own state, then the signatures
   * (at most one failed verification per envelope). Versions are millisecond timestamps;
   * none beyond this node's clock plus MAX_CLOCK_SKEW_MS is taken, so however high a
   * keyholder (or a stolen key) pushes the version, a RESUME quorum signing a moment later
   * can always supersede it (docs/security.md; test/unit/governance-model.spec.ts).
   */
  async apply (bytes: Uint8Array, opts: { catchUp?: boolean } = {}): Promise<ApplyResult> {
    // one at a time: every check and the state change it leads to see the same state (gossip
    // validates the messages of one RPC concurrently, catch-ups from several peers overlap)
    const run = this.queue.then(async () => await this.applyNow(bytes, opts))
    this.queue = run.catch(() => {})
    return await run
  }

  private queue: Promise<unknown> = Promise.resolve()

  private async applyNow (bytes: Uint8Array, opts: { catchUp?: boolean }): Promise<ApplyResult> {
    const now = this.now()
    const inspected = inspectEnvelope(bytes, this.config, now, { allowExpired: opts.catchUp === true })
    if (!inspected.ok) return this.refused(inspected)
    const m = inspected.envelope.message
    // the very message in force: 'known' (a second copy, not an attack); an older one is 'stale'
    if (m.kind !== Kind.VOTE && m.version === this.version && this.isLatest(inspected.envelope.payload)) {
      return this.refused({ ok: false, code: 'known', reason: `${Kind[m.kind]} version ${m.version} is already applied here` }, inspected.envelope)
    }
    if (m.kind !== Kind.VOTE) {
      if (m.version <= this.version) {
        const reason = `version ${m.version} is not above the accepted version ${this.version} (replay or stale)`
        return this.refused({ ok: false, code: 'stale', reason }, inspected.envelope)
      }
      if (m.kind === Kind.RESUME) {
        // not halted here (this node never saw the halt it lifts, or saw the RESUME first):
        // still taken, as a version step, once its signatures verify (noop), so the older
        // HALT it answers can never be applied afterwards
        if (this.halted != null && m.liftsVersion < this.halted.version) {
          const reason = `RESUME lifts version ${m.liftsVersion}, the halt in force is version ${this.halted.version}`
          return this.refused({ ok: false, code: 'lifts-older', reason }, inspected.envelope)
        }
      }
    } else {
      const rec = this.votes.get(keyHex(m.motionId))
      const fresh = inspected.envelope.signatures.some(s => { const p = rec?.get(keyHex(s.publicKey)); return p == null || m.version > p.version })
      if (!fresh) return this.refused({ ok: false, code: 'replayed-vote', reason: `replayed vote (version ${m.version})` }, inspected.envelope)
    }
    // VOTE: only the entries of signers whose vote this would change are verified
    const voteRec = m.kind === Kind.VOTE ? this.votes.get(keyHex(m.motionId)) : undefined
    const staleVoter = m.kind === Kind.VOTE
      ? (pk: Uint8Array): boolean => { const p = voteRec?.get(keyHex(pk)); return p != null && m.version <= p.version }
      : undefined
    const v = await verifySigners(inspected.envelope, this.config, this.verifications, staleVoter)
    if (!v.ok) return this.refused(v, inspected.envelope)
    if (m.kind === Kind.VOTE) {
      const id = keyHex(m.motionId)
      const rec = this.votes.get(id) ?? new Map<string, VoteRecord>()
      for (const s of v.signers) {
        const h = keyHex(s)
        const prior = rec.get(h)
        if (prior == null || m.version > prior.version) rec.set(h, { version: m.version, approve: m.approve, atMs: Math.min(m.issuedAtMs, now) })
      }
      this.votes.set(id, rec)
      this.voteLog.push(bytes)
      if (this.voteLog.length > VOTE_LOG_MAX) this.voteLog.shift()
      await this.persistSafely()
      return { accepted: true, kind: m.kind, envelope: v.envelope }
    }
    let noop = false
    switch (m.kind) {
      case Kind.HALT:
        // when it was issued (a node that learns it later, by catch-up, reports the halt's time, not its own)
        this.halted = { version: m.version, reason: m.reason, atMs: Math.min(m.issuedAtMs, now) }
        this.lastHalt = this.halted
        this.haltEnvelopeBytes = bytes
        break
      case Kind.RESUME:
        if (this.halted == null) { noop = true; break }
        this.halted = undefined
        this.haltEnvelopeBytes = undefined
        this.readOnly = true
        this.lastResumeAtMs = Math.min(m.issuedAtMs, now)
        break
      case Kind.PHASE:
        this.phase = m.phase
        this.readOnly = false
        break
      case Kind.KEYHOLDERS:
        this.config = {
          ...this.config,
          keyholders: m.keyholders.map(publicKey => ({ publicKey })),
          thresholds: m.thresholds,
          reviewPeriodMs: m.reviewPeriodMs,
          revertOnHalt: m.revertOnHalt
        }
        this.configFromChain = true
        this.keyholderLog.push(bytes)
        break
    }
    this.version = m.version
    this.stateLog.push(bytes)
    if (this.stateLog.length > STATE_LOG_MAX) this.stateLog.shift()
    await this.persistSafely()
    return { accepted: true, kind: m.kind, envelope: v.envelope, ...(noop ? { noop: true as const } : {}) }
  }

  /** whether `payload` is the payload of the state message in force (the last one accepted) */
  private isLatest (payload: Uint8Array): boolean {
    const last = this.stateLog[this.stateLog.length - 1]
    if (last == null) return false
    try {
      const p = decodeEnvelope(last).payload
      return p.length === payload.length && p.every((x, i) => x === payload[i])
    } catch {
      return false
    }
  }

  private refused (v: Verdict & { ok: false }, envelope?: Envelope): ApplyResult {
    switch (v.code) {
      case 'malformed': this.rejected.malformed++; break
      case 'mesh': case 'not-keyholder': case 'threshold': case 'bad-signature': this.rejected.forged++; break
      case 'stale': case 'replayed-vote': case 'known': this.rejected.replay++; break
      default: this.rejected.other++
    }
    return { accepted: false, code: v.code, reason: v.reason, ...(envelope != null ? { envelope } : {}) }
  }

  /** last error writing the state file (the in-memory state still applies: a HALT still stops this node) */
  persistError?: Error

  private async persistSafely (): Promise<void> {
    try {
      await this.persist()
      this.persistError = undefined
    } catch (err) {
      // what writing a file throws: an Error
      this.persistError = err as Error
    }
  }

  /**
   * Writes the state file atomically (temporary file, fsync, rename) without blocking the event
   * loop: applies are serialised by `queue`, so two writes never interleave. (A synchronous
   * fsync blocked every other peer of a process for ~3 ms per message.)
   */
  private async persist (): Promise<void> {
    if (this.file == null) return
    const data = JSON.stringify({
      format: 1,
      config: configToJson(this.config),
      configFromChain: this.configFromChain,
      version: this.version,
      halted: this.halted,
      lastHalt: this.lastHalt,
      lastResumeAtMs: this.lastResumeAtMs,
      readOnly: this.readOnly,
      phase: this.phase,
      votes: [...this.votes].map(([id, m]) => [id, [...m]]),
      stateLog: this.stateLog.map(b => Buffer.from(b).toString('base64')),
      voteLog: this.voteLog.map(b => Buffer.from(b).toString('base64')),
      keyholderLog: this.keyholderLog.map(b => Buffer.from(b).toString('base64')),
      haltEnvelope: this.haltEnvelopeBytes != null ? Buffer.from(this.haltEnvelopeBytes).toString('base64') : undefined
    })
    await mkdir(dirname(this.file), { recursive: true })
    const tmp = `${this.file}.tmp`
    const fh = await open(tmp, 'w')
    try {
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, this.file)
  }

  private load (file: string): void {
    const j = JSON.parse(readFileSync(file, 'utf8'))
    const saved = parseConfig(JSON.stringify(j.config), file)
    // a state file belongs to one mesh: never carry a halt or versions across meshes
    if (saved.meshId !== this.config.meshId) return
    // keyholders changed by signed KEYHOLDERS messages outrank the file the node started with
    if (j.configFromChain === true) { this.config = saved; this.configFromChain = true }
    this.version = j.version ?? 0
    this.halted = j.halted ?? undefined
    this.lastHalt = j.lastHalt ?? undefined
    this.lastResumeAtMs = j.lastResumeAtMs ?? undefined
    this.readOnly = j.readOnly === true
    this.phase = j.phase ?? 0
    for (const [id, entries] of j.votes ?? []) this.votes.set(id, new Map(entries))
    this.stateLog = (j.stateLog ?? []).map((s: string) => Uint8Array.from(Buffer.from(s, 'base64')))
    this.voteLog = (j.voteLog ?? []).map((s: string) => Uint8Array.from(Buffer.from(s, 'base64')))
    this.keyholderLog = (j.keyholderLog ?? []).map((s: string) => Uint8Array.from(Buffer.from(s, 'base64')))
    if (typeof j.haltEnvelope === 'string') this.haltEnvelopeBytes = Uint8Array.from(Buffer.from(j.haltEnvelope, 'base64'))
  }
}
