/**
 * `meshllm join` (options: src/cli/commands/join.ts): an expert that serves its model, routes
 * for `--via` callers, follows the mesh's governance and optionally serves the gRPC/HTTP API.
 * Loaded only when the command runs: libp2p and node-llama-cpp are heavy.
 */
import { join as joinPath } from 'node:path'
import { startExpert } from '../expert/expert.js'
import { fingerprintHex } from '../expert/tokenizer.js'
import { resolveModel } from '../expert/resolve.js'
import { parseMultiaddr } from '../node/node.js'
import { defaultDataDir, lockDataDir } from '../node/data-dir.js'
import { Router, verifyHaltWith } from '../router/router.js'
import { RouterTokenizer } from '../router/tokenizer.js'
import { generateService, generateTokenFrom } from '../router/generate-service.js'
import { GovernanceState } from '../governance/state.js'
import { GovernanceService } from '../governance/service.js'
import { configDigest } from '../governance/config.js'
import { ChangeLog, revertOnHalt } from '../governance/changelog.js'
import { governanceConfigFrom, refuseDevGovernanceOffLoopback } from './governance-cli.js'
import { ProgressBar } from './progress.js'
import { isLoopback, readTlsFiles, resolveApiToken } from '../api/auth.js'
import { UsageError } from './errors.js'
import { intOption as int, type Values } from './args.js'

export async function join (values: Values): Promise<void> {
  if (values.model == null) throw new UsageError('join needs --model <path|uri>')
  // routed generation (/meshllm/generate): off, open, or for holders of a token (file or $MESHLLM_GENERATE_TOKEN, never argv)
  if (values['no-route'] === true && values['generate-token'] != null) throw new UsageError('--no-route and --generate-token exclude each other')
  const generateToken = values['no-route'] === true ? undefined : await generateTokenFrom(values['generate-token'])
  const generateMaxK = int(values['generate-max-k'], 'generate-max-k', 1)
  const apiModule = values.grpc != null || values.http != null ? await import('../api/index.js') : undefined
  // token and TLS files are read, and the bind rules (non-loopback needs a token and TLS or
  // --insecure-behind-proxy) checked, before the model loads; --api-token is refused (ps shows argv)
  const apiToken = resolveApiToken({ flag: values['api-token'], file: values['api-token-file'] })
  const apiTls = readTlsFiles(values['tls-cert'], values['tls-key'])
  const insecureBehindProxy = values['insecure-behind-proxy'] === true
  apiModule?.validateApiOptions({ grpc: values.grpc, http: values.http, token: apiToken, tls: apiTls, insecureBehindProxy })
  for (const [flag, bind] of [['--grpc', values.grpc], ['--http', values.http]] as const) {
    if (bind != null && apiTls == null && insecureBehindProxy && !isLoopback(apiModule!.parseHostPort(bind, flag).host)) process.stderr.write(`warning: ${flag} ${bind} serves clear text (--insecure-behind-proxy): only a TLS-terminating reverse proxy may reach it\n`)
  }
  for (const a of [...(values.listen ?? []), ...(values.announce ?? []), ...(values.bootstrap ?? [])]) parseMultiaddr(a)
  // an unknown model is reported before anything else is printed
  await resolveModel(values.model, { progress: process.stderr.isTTY })
  const govConfig = await governanceConfigFrom(values.governance)
  refuseDevGovernanceOffLoopback(govConfig, [...(values.listen ?? []), ...(values.announce ?? []), ...(values.bootstrap ?? [])])
  // state always on disk: --data-dir, else the per-user default (one process per directory)
  const dataDir: string = values['data-dir'] ?? defaultDataDir()
  const releaseDataDir = lockDataDir(dataDir)
  process.once('exit', releaseDataDir)
  process.stderr.write(`data dir ${dataDir}${values['data-dir'] == null ? ' (default; --data-dir to choose)' : ''}\n`)
  const govState = new GovernanceState(govConfig, joinPath(dataDir, 'governance-state.json'))
  process.stderr.write(`governance: mesh "${govState.config.meshId}", ${govState.config.keyholders.length} keyholder(s), digest ${configDigest(govState.config)}${govState.halted != null ? `, HALTED: ${govState.halted.reason}` : ''}\n`)
  const bar = process.stderr.isTTY ? new ProgressBar('loading model') : undefined
  let router: Router | undefined
  let gov!: GovernanceService
  let inferService: { haltAll: (reason: string) => void } | undefined
  // every change the mesh applies to itself is recorded here with its undo; a HALT reverts the last N
  const changes = new ChangeLog(joinPath(dataDir, 'changes.json'))
  const expert = await startExpert({
    model: values.model,
    listen: values.listen,
    announce: values.announce,
    bootstrap: values.bootstrap,
    dataDir,
    threads: int(values.threads, 'threads', 1),
    maxSessions: int(values['max-sessions'], 'max-sessions', 1),
    maxSessionsPerPeer: int(values['max-sessions-per-peer'], 'max-sessions-per-peer', 1),
    contextSize: int(values['context-size'], 'context-size', 16),
    gpu: values.gpu === 'false' || values.gpu === 'off' ? false : 'auto',
    idleTimeoutMs: int(values['idle-timeout'], 'idle-timeout', 1),
    progress: process.stderr.isTTY,
    onLoadProgress: bar != null ? (f: number) => bar.update(f) : undefined,
    haltReason: () => govState.haltReason,
    haltEnvelope: () => govState.haltEnvelope,
    // catch up with the mesh's governance before serving or advertising anything; the HALT
    // hooks are in place before the first catch-up (a HALT learnt then reverts changes too)
    beforeServe: async (node) => {
      gov = new GovernanceService(node, govState)
      gov.on({
        onHalt: (reason) => {
          process.stderr.write(`HALTED by governance: ${reason} (at ${Date.now()})\n`)
          inferService?.haltAll(reason)
          router?.abortAll(reason)
          revertOnHalt(changes, govState.config).then(r => {
            if (r.reverted.length + r.failed.length > 0) process.stderr.write(`reverted ${r.reverted.length} change(s) on HALT${r.failed.length > 0 ? `, ${r.failed.length} could not be undone` : ''}\n`)
          }, (err: any) => { process.stderr.write(`warning: reverting changes on HALT failed: ${err?.message ?? err}\n`) })
        },
        onResume: () => { process.stderr.write('resumed by governance (read-only until a phase vote)\n') }
      })
      await gov.start()
      // bounded wait for an answer (a peer may refuse while it serves others): then serve
      // with this node's own state, and say so
      const deadline = Date.now() + 10_000
      let sync = await gov.syncAll({ timeoutMs: 5_000 })
      while (sync.answered === 0 && sync.peers > 0 && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 500))
        sync = await gov.syncAll({ timeoutMs: Math.max(500, deadline - Date.now()) })
      }
      if ((values.bootstrap ?? []).length > 0 && sync.answered === 0) process.stderr.write(`warning: no peer answered the governance catch-up (${sync.peers} connected): serving with this node's own state${govState.halted != null ? ' (HALTED)' : ''}\n`)
      else if (sync.answered > 0) process.stderr.write(`governance: caught up from ${sync.answered} peer(s): version ${govState.version}${govState.halted != null ? `, HALTED: ${govState.halted.reason}` : ''}\n`)
    },
    extraServices: values['no-route'] === true ? {} : { generate: generateService({ router: () => router, token: generateToken, maxK: generateMaxK }) }
  })
  bar?.done()
  // this peer also routes for callers that use --via; the router is its own component and
  // uses the expert's vocabulary (vocab-only load), never the expert's sessions
  router = new Router(expert.node, await RouterTokenizer.load(expert.host.modelPath), { haltReason: () => govState.haltReason, verifyHalt: verifyHaltWith(gov) })
  inferService = expert.service
  const api = apiModule != null
    ? await apiModule.startApi({
      node: expert.node,
      router,
      governance: gov,
      expert,
      tasks: joinPath(dataDir, 'tasks.sqlite'),
      grpc: values.grpc,
      http: values.http,
      token: apiToken,
      tls: apiTls,
      insecureBehindProxy
    })
    : undefined
  if (api?.grpcPort != null) process.stdout.write(`grpc ${apiModule?.parseHostPort(values.grpc, '--grpc').host}:${api.grpcPort}\n`)
  if (api?.httpPort != null) process.stdout.write(`http ${apiTls != null ? 'https' : 'http'}://${apiModule?.parseHostPort(values.http, '--http').host}:${api.httpPort}/\n`)
  process.stderr.write(`expert ${expert.host.summary.name}: ${expert.tokensPerSecond.toFixed(1)} tokens/s, ${expert.host.threads} thread(s), ${expert.host.maxSessions} sessions, tokenizer ${fingerprintHex(expert.host.summary.fingerprint).slice(0, 16)}\n`)
  for (const ma of expert.node.getMultiaddrs()) process.stdout.write(`listening ${ma.toString()}\n`)
  await new Promise<void>((resolve) => {
    let stopping = false
    const stop = (): void => {
      if (stopping) return
      stopping = true
      Promise.race([
        (async () => { await api?.close(); await gov.stop(); await router?.tokenizer.close(); await expert.stop() })(),
        new Promise(resolve => setTimeout(resolve, 5_000))
      ]).finally(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
