/**
 * MeshPeer: the one composition root. It assembles a mesh node from options — libp2p node,
 * expert (optional), governance (state, service, catch-up), change log with revert-on-HALT,
 * router, routed generation for other peers, API (optional) — with one start and one stop
 * in a defined order, and the HALT hookup written once.
 *
 *   start: data dir lock → governance state → node (+ expert: model, node, catch-up, then
 *          /meshllm/infer and the DHT record) or node alone (+ catch-up) → router → API
 *   stop:  API → governance → router → expert / node → data dir lock   (reverse)
 *
 * A HALT the governance applies (gossip, catch-up, a router's verified expert answer)
 * ends the expert's sessions, aborts the router's generations, reverts the last recorded
 * changes and reaches every `halt` listener; nothing else may say "halted".
 */
import { join as joinPath } from 'node:path'
import type { AbortOptions } from '@libp2p/interface'
import type { GovernanceConfig } from '../governance/config.js'
import type { GovernanceService } from '../governance/service.js'
import type { GovernanceState } from '../governance/state.js'
import type { ChangeLog, RevertReport } from '../governance/changelog.js'
import type { MeshNode } from '../node/node.js'
import type { Expert, ExpertOptions } from '../expert/expert.js'
import type { Router, RouterOptions } from '../router/router.js'
import type { RouterTokenizer } from '../router/tokenizer.js'
import type { ApiHandle, StartApiOptions } from '../api/index.js'
import type { ReachOptions } from '../node/reach.js'

/** Expert settings of a peer that serves a model (ExpertOptions, without what MeshPeer decides) */
export type MeshPeerExpertInit = Omit<ExpertOptions, 'listen' | 'announce' | 'bootstrap' | 'dataDir' | 'haltReason' | 'haltEnvelope' | 'beforeServe' | 'extraServices'>

export interface MeshPeerInit {
  /** serve a model as an expert (default: none; the peer then only routes) */
  expert?: MeshPeerExpertInit
  /** listen addresses (default: an expert listens on /ip4/127.0.0.1/tcp/0, a routing-only peer nowhere) */
  listen?: string[]
  /** addresses announced instead of the listen addresses (default: none) */
  announce?: string[]
  /** peers to join through (default: none) */
  bootstrap?: string[]
  /** relays, reservations, mDNS, UPnP (src/node/reach.ts; default: none) */
  reach?: ReachOptions
  /** serve the DHT (default: an expert does unless it holds relay reservations; a routing-only peer does when it listens) */
  dhtServer?: boolean
  /**
   * state directory: identity, governance state, change log, task database; locked, one
   * process per directory (default: none: a routing-only peer keeps its governance state in
   * memory; an expert needs one)
   */
  dataDir?: string
  /** the mesh's governance (the caller decides between a file and the development governance) */
  governance: GovernanceConfig
  /** how long start waits for a peer to answer the governance catch-up (ms, default 10 s) */
  catchUpMs?: number
  /**
   * the tokenizer the router uses: a model (path or bundled name) it loads, or one already
   * loaded (or still loading: awaited once the node has started and caught up) and shared
   * with other users in this process, which the peer then does not close (default: an
   * expert's own model, else the bundled meshtest-c)
   */
  tokenizer?: string | RouterTokenizer | Promise<RouterTokenizer>
  /**
   * router settings (haltReason and verifyHalt are MeshPeer's: the peer's own governance;
   * local is the peer's own expert, used in process by its router)
   */
  router?: Omit<RouterOptions, 'haltReason' | 'verifyHalt' | 'local'>
  /**
   * routed generation for other peers (/meshllm/generate, `--via`): false = off; otherwise
   * open, or for holders of `token`, at most `maxK` experts per request (default: open, on
   * experts only)
   */
  route?: false | { token?: string, maxK?: number }
  /** gRPC / HTTP API (StartApiOptions without what MeshPeer provides; default: none) */
  api?: Omit<StartApiOptions, 'node' | 'router' | 'governance' | 'expert' | 'tasks' | 'metricsRegistry'>
  /**
   * libp2p's own metrics (libp2p_* series) on the registry the API's /metrics serves (default:
   * on when the API serves HTTP). One such peer per process: @libp2p/prometheus-metrics keeps
   * a process-wide table.
   */
  metrics?: boolean
  /** one line for the operator per event (governance state, catch-up, HALT, RESUME, reverts; default: none) */
  log?: (line: string) => void
}

export interface MeshPeerEvents {
  halt: (reason: string) => void
  resume: () => void
  /** the changes a HALT reverted */
  revert: (report: RevertReport) => void
}

/** A data directory is required for an expert (its identity and HALT state must survive restarts). */
export class MeshPeerConfigError extends Error {
  static override name = 'MeshPeerConfigError'
  override name = 'MeshPeerConfigError'
}

export class MeshPeer {
  readonly node: MeshNode
  readonly router: Router
  readonly governance: GovernanceService
  readonly state: GovernanceState
  readonly changes: ChangeLog | undefined
  readonly expert: Expert | undefined
  readonly api: ApiHandle | undefined
  private readonly listeners: { [E in keyof MeshPeerEvents]: Set<MeshPeerEvents[E]> } = { halt: new Set(), resume: new Set(), revert: new Set() }
  private readonly tokenizer: RouterTokenizer
  private readonly ownsTokenizer: boolean
  private readonly releaseDataDir: (() => void) | undefined
  private stopping: Promise<void> | undefined

  private constructor (parts: { node: MeshNode, router: Router, governance: GovernanceService, state: GovernanceState, changes?: ChangeLog, expert?: Expert, api?: ApiHandle, tokenizer: RouterTokenizer, ownsTokenizer: boolean, releaseDataDir?: () => void }) {
    this.node = parts.node
    this.router = parts.router
    this.governance = parts.governance
    this.state = parts.state
    this.changes = parts.changes
    this.expert = parts.expert
    this.api = parts.api
    this.tokenizer = parts.tokenizer
    this.ownsTokenizer = parts.ownsTokenizer
    this.releaseDataDir = parts.releaseDataDir
  }

  /** subscribe to an event; returns the unsubscribe */
  on<E extends keyof MeshPeerEvents> (event: E, listener: MeshPeerEvents[E]): () => void {
    const set = this.listeners[event] as Set<MeshPeerEvents[E]>
    set.add(listener)
    return () => { set.delete(listener) }
  }

  private emit<E extends keyof MeshPeerEvents> (event: E, ...args: Parameters<MeshPeerEvents[E]>): void {
    for (const l of [...this.listeners[event]]) {
      try {
        (l as (...a: Parameters<MeshPeerEvents[E]>) => void)(...args)
      } catch {
        // a listener's failure is its own: the others and the HALT itself go on
      }
    }
  }

  static async start (init: MeshPeerInit): Promise<MeshPeer> {
    const log = init.log ?? (() => {})
    if (init.expert != null && init.dataDir == null) throw new MeshPeerConfigError('an expert peer needs a data directory (identity and governance state survive restarts)')
    const [{ GovernanceState }, { GovernanceService }, { ChangeLog, revertOnHalt }, { configDigest }, { lockDataDir, taskDbPath }, { createMeshNode, connectBootstrap }, { Router, verifyHaltWith }, { RouterTokenizer }, { generateService }] = await Promise.all([
      import('../governance/state.js'), import('../governance/service.js'), import('../governance/changelog.js'), import('../governance/config.js'), import('../node/data-dir.js'),
      import('../node/node.js'), import('../router/router.js'), import('../router/tokenizer.js'), import('../router/generate-service.js')
    ])
    const metrics = (init.metrics ?? init.api?.http != null) ? new (await import('prom-client')).Registry() : undefined
    const releaseDataDir = init.dataDir != null ? lockDataDir(init.dataDir) : undefined
    const cleanup: Array<() => Promise<void>> = []
    try {
      const state = new GovernanceState(init.governance, init.dataDir != null ? joinPath(init.dataDir, 'governance-state.json') : undefined)
      log(`governance: mesh "${state.config.meshId}", ${state.config.keyholders.length} keyholder(s), digest ${configDigest(state.config)}${state.halted != null ? `, HALTED: ${state.halted.reason}` : ''}`)
      const changes = init.dataDir != null ? new ChangeLog(joinPath(init.dataDir, 'changes.json')) : undefined
      // set once the parts exist; the HALT hookup reads them when a HALT comes
      let peer: MeshPeer | undefined
      let governance: GovernanceService | undefined
      let router: Router | undefined
      let expert: Expert | undefined
      const halted = (reason: string): void => {
        log(`HALTED by governance: ${reason} (at ${Date.now()})`)
        expert?.service.haltAll(reason)
        router?.abortAll(reason)
        if (changes != null) {
          revertOnHalt(changes, state.config).then(r => {
            if (r.reverted.length + r.failed.length > 0) log(`reverted ${r.reverted.length} change(s) on HALT${r.failed.length > 0 ? `, ${r.failed.length} could not be undone` : ''}`)
            peer?.emit('revert', r)
          }, (err: any) => { log(`warning: reverting changes on HALT failed: ${err?.message ?? err}`) })
        }
        peer?.emit('halt', reason)
      }
      const catchUp = async (node: MeshNode): Promise<GovernanceService> => {
        const gov = new GovernanceService(node, state)
        gov.on({ onHalt: halted, onResume: () => { log('resumed by governance (read-only until a phase vote)'); peer?.emit('resume') } })
        await gov.start()
        cleanup.push(async () => { await gov.stop() })
        // bounded wait for an answer (a peer may refuse while it serves others): then serve
        // with this node's own state, and say so
        const sync = await gov.catchUp(init.catchUpMs ?? 10_000)
        if ((init.bootstrap ?? []).length > 0 && sync.answered === 0) log(`warning: no peer answered the governance catch-up (${sync.peers} connected): serving with this node's own state${state.halted != null ? ' (HALTED)' : ''}`)
        else if (sync.answered > 0) log(`governance: caught up from ${sync.answered} peer(s): version ${state.version}${state.halted != null ? `, HALTED: ${state.halted.reason}` : ''}`)
        return gov
      }
      const route = init.route ?? (init.expert != null ? {} : false)
      const extraServices: Record<string, (components: any) => unknown> = route === false ? {} : { generate: generateService({ router: () => router, token: route.token, maxK: route.maxK }) }
      let node: MeshNode
      if (init.expert != null) {
        const { startExpert } = await import('../expert/expert.js')
        expert = await startExpert({
          ...init.expert,
          listen: init.listen,
          announce: init.announce,
          bootstrap: init.bootstrap,
          dataDir: init.dataDir,
          reach: init.reach,
          // behind NAT, reached through a relay: other peers' DHT queries could not reach it
          dhtServer: init.dhtServer ?? (init.reach?.relayReservations ?? 0) === 0,
          haltReason: () => state.haltReason,
          haltEnvelope: () => state.haltEnvelope,
          // catch up with the mesh's governance before serving or advertising anything
          beforeServe: async (n) => { governance = await catchUp(n) },
          extraServices,
          metrics
        })
        const e = expert
        cleanup.push(async () => { await e.stop() })
        node = expert.node
      } else {
        node = await createMeshNode({ listen: init.listen ?? [], announce: init.announce, bootstrap: init.bootstrap, dataDir: init.dataDir, dhtServer: init.dhtServer ?? ((init.listen ?? []).length > 0 && (init.reach?.relayReservations ?? 0) === 0), reach: init.reach, services: extraServices, metrics })
        await node.start()
        const n = node
        cleanup.push(async () => { await n.stop() })
        if ((init.bootstrap ?? []).length > 0) await connectBootstrap(node, init.bootstrap ?? [])
        governance = await catchUp(node)
      }
      if (governance == null) throw new Error('governance did not start')
      const gov = governance
      const sharedTokenizer = typeof init.tokenizer === 'object' ? await init.tokenizer : undefined
      const tokenizer = sharedTokenizer ?? await RouterTokenizer.load((typeof init.tokenizer === 'string' ? init.tokenizer : undefined) ?? expert?.host.modelPath ?? 'meshtest-c')
      if (sharedTokenizer == null) cleanup.push(async () => { await tokenizer.close() })
      // the peer's own expert serves its router in process (no dial), like any other expert
      const own = expert
      const local = own != null ? { peerId: node.peerId, record: () => own.advertiser.lastRecord ?? own.advertiser.buildRecord(), openStream: async (o: AbortOptions) => await own.service.openLocal(o) } : undefined
      router = new Router(node, tokenizer, { ...(init.router ?? {}), haltReason: () => state.haltReason, verifyHalt: verifyHaltWith(gov), ...(local != null ? { local } : {}) })
      let api: ApiHandle | undefined
      if (init.api != null && (init.api.grpc != null || init.api.http != null)) {
        const { startApi } = await import('../api/index.js')
        api = await startApi({ ...init.api, node, router, governance: gov, expert, tasks: init.dataDir != null ? taskDbPath(init.dataDir) : undefined, metricsRegistry: metrics })
      }
      peer = new MeshPeer({ node, router, governance: gov, state, changes, expert, api, tokenizer, ownsTokenizer: sharedTokenizer == null, releaseDataDir })
      return peer
    } catch (err) {
      for (const c of cleanup.reverse()) await c().catch(() => {})
      releaseDataDir?.()
      throw err
    }
  }

  /** stops everything in reverse start order; idempotent, every part is stopped even if one fails */
  async stop (): Promise<void> {
    this.stopping ??= (async () => {
      const steps: Array<() => Promise<unknown>> = [
        async () => await this.api?.close(),
        async () => await this.governance.stop(),
        async () => { if (this.ownsTokenizer) await this.tokenizer.close() },
        async () => { if (this.expert != null) await this.expert.stop(); else await this.node.stop() }
      ]
      for (const s of steps) await s().catch(() => {})
      this.releaseDataDir?.()
    })()
    await this.stopping
  }
}
