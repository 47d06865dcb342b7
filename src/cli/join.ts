/**
 * `meshllm join` (options: src/cli/commands/join.ts): an expert that serves its model, routes
 * for `--via` callers, follows the mesh's governance and optionally serves the gRPC/HTTP API.
 * Loaded only when the command runs: libp2p and node-llama-cpp are heavy.
 */
import { fingerprintHex } from '../expert/tokenizer.js'
import { resolveModel } from '../expert/resolve.js'
import type { Multiaddr } from '@multiformats/multiaddr'
import { parseMultiaddr } from '../node/node.js'
import { MAX_RESERVATIONS, defaultMdns, defaultRelayReservations, type ReachOptions } from '../node/reach.js'
import { defaultDataDir } from '../node/data-dir.js'
import { generateTokenFrom } from '../router/generate-service.js'
import { MeshPeer } from '../peer/mesh-peer.js'
import { governanceConfigFrom, refuseDevGovernanceOffLoopback } from './governance-cli.js'
import { ProgressBar } from './progress.js'
import { isLoopback, readTlsFiles, resolveApiToken } from '../api/auth.js'
import { UsageError } from './errors.js'
import { intOption as int, type Values } from './args.js'
import { MAX_SESSIONS } from '../expert/sessions.js'

/** --relay, --relay-reservations, --no-mdns, --upnp, with their automatic defaults (src/node/reach.ts) */
function reachFromFlags (values: Values): ReachOptions {
  const ma = (xs: string[] | undefined): Multiaddr[] => (xs ?? []).map(parseMultiaddr)
  const listen = ma(values.listen ?? ['/ip4/127.0.0.1/tcp/0'])
  const reservations = values['relay-reservations'] != null ? int(values['relay-reservations'], 'relay-reservations', 0, MAX_RESERVATIONS) as number : defaultRelayReservations(listen, ma(values.announce), ma(values.bootstrap))
  if (values.relay === true && reservations > 0 && values['relay-reservations'] != null) throw new UsageError('--relay serves relays for others: it does not also hold reservations (--relay-reservations 0)')
  return {
    relay: values.relay === true,
    relayReservations: values.relay === true ? 0 : reservations,
    mdns: values['no-mdns'] !== true && defaultMdns(listen),
    upnp: values.upnp === true
  }
}

export async function join (values: Values): Promise<void> {
  if (values.model == null) throw new UsageError('join needs --model <path|uri>')
  // routed generation (/meshllm/generate): off, open, or for holders of a token (file or $MESHLLM_GENERATE_TOKEN, never argv)
  if (values['no-route'] === true && values['generate-token'] != null) throw new UsageError('--no-route and --generate-token exclude each other')
  const generateToken = values['no-route'] === true ? undefined : await generateTokenFrom(values['generate-token'])
  const generateMaxK = int(values['generate-max-k'], 'generate-max-k', 1)
  const maxSessions = values['max-sessions'] === 'auto' ? 'auto' : int(values['max-sessions'], 'max-sessions', 1, MAX_SESSIONS)
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
  const reach = reachFromFlags(values)
  // an unknown model is reported before anything else is printed
  await resolveModel(values.model, { progress: process.stderr.isTTY })
  const govConfig = await governanceConfigFrom(values.governance)
  refuseDevGovernanceOffLoopback(govConfig, [...(values.listen ?? []), ...(values.announce ?? []), ...(values.bootstrap ?? [])])
  // state always on disk: --data-dir, else the per-user default (one process per directory)
  const dataDir: string = values['data-dir'] ?? defaultDataDir()
  process.stderr.write(`data dir ${dataDir}${values['data-dir'] == null ? ' (default; --data-dir to choose)' : ''}\n`)
  const bar = process.stderr.isTTY ? new ProgressBar('loading model') : undefined
  // the one composition root: data-dir lock, governance and its catch-up before serving,
  // expert, router, routed generation, API, the HALT hookup, and the stop order
  const localSpec: string | undefined = values['local-model'] != null && values['local-model'] !== 'none' ? values['local-model'] : undefined
  const localModel = localSpec != null ? await (await import('../router/local-model.js')).LocalModel.load(localSpec) : undefined
  const peer = await MeshPeer.start({
    router: localModel != null || values.frames != null ? { ...(localModel != null ? { localModel } : {}), ...(values.frames != null ? { frames: values.frames } : {}) } : undefined,
    expert: {
      model: values.model,
      threads: int(values.threads, 'threads', 1),
      maxSessions,
      maxSessionsPerPeer: int(values['max-sessions-per-peer'], 'max-sessions-per-peer', 1),
      queueTimeoutMs: int(values['queue-timeout'], 'queue-timeout', 0, 20_000),
      contextSize: int(values['context-size'], 'context-size', 16),
      gpu: values.gpu === 'false' || values.gpu === 'off' ? false : 'auto',
      idleTimeoutMs: int(values['idle-timeout'], 'idle-timeout', 1),
      progress: process.stderr.isTTY,
      onLoadProgress: bar != null ? (f: number) => bar.update(f) : undefined
    },
    listen: values.listen,
    announce: values.announce,
    bootstrap: values.bootstrap,
    reach,
    dataDir,
    governance: govConfig,
    route: values['no-route'] === true ? false : { token: generateToken, maxK: generateMaxK },
    api: apiModule != null ? { grpc: values.grpc, http: values.http, token: apiToken, tls: apiTls, insecureBehindProxy } : undefined,
    log: (line) => { process.stderr.write(line + '\n') }
  })
  bar?.done()
  if (localModel != null && !localModel.matches(peer.router.tokenizer)) {
    await peer.stop()
    await localModel.close()
    const { LocalModelMismatchError } = await import('../router/local-model.js')
    throw new LocalModelMismatchError(`--local-model ${localSpec}: its tokenizer is not this expert's`)
  }
  const expert = peer.expert!
  const api = peer.api
  if (api?.grpcPort != null) process.stdout.write(`grpc ${apiModule?.parseHostPort(values.grpc, '--grpc').host}:${api.grpcPort}\n`)
  if (api?.httpPort != null) process.stdout.write(`http ${apiTls != null ? 'https' : 'http'}://${apiModule?.parseHostPort(values.http, '--http').host}:${api.httpPort}/\n`)
  process.stderr.write(`expert ${expert.host.summary.name}: ${expert.tokensPerSecond.toFixed(1)} tokens/s, ${expert.host.threads} thread(s), ${expert.host.maxSessions} sessions, tokenizer ${fingerprintHex(expert.host.summary.fingerprint).slice(0, 16)}\n`)
  for (const ma of peer.node.getMultiaddrs()) process.stdout.write(`listening ${ma.toString()}\n`)
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      Promise.race([peer.stop().then(async () => await localModel?.close()), new Promise(resolve => setTimeout(resolve, 5_000))]).finally(resolve)
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}
