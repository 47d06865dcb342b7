/**
 * meshllm CLI: join, generate, status, demo. Errors are one clear line on stderr and a
 * non-zero exit code (see EXIT in this file and README).
 */
import { join as joinPath } from 'node:path'
// Everything else is imported by the command that needs it: libp2p costs ≈ 0.7 s to load and
// node-llama-cpp as much again, so `meshllm halt` (the kill switch) and `meshllm help` pay
// only for what they use.
import type { GenerateResult } from '../router/router.js'
import type { Drafter } from '../router/drafter.js'
import type { GovernanceService } from '../governance/service.js'
import type { Router } from '../router/router.js'
import { GENERATE_DEFAULTS, validateGenerateOptions } from '../router/options.js'
import { isLoopback, readTlsFiles, resolveApiToken } from '../api/auth.js'
import { EXIT, UsageError } from './errors.js'
import { intOption, parse } from './args.js'

export { EXIT, UsageError }

const USAGE = `usage:
  meshllm join --model <path|uri|meshtest-a|b|c> [--listen <multiaddr>] [--announce <multiaddr>]… [--bootstrap <multiaddr>]… [--data-dir <dir>] [--threads <n>] [--max-sessions <n>]
               [--governance <file>] [--grpc <host:port>] [--http <host:port>] [--api-token-file <file>] [--tls-cert <pem> --tls-key <pem> | --insecure-behind-proxy]
               (API token: --api-token-file, mode 600, or MESHLLM_API_TOKEN; non-loopback binds need a token and TLS: docs/api.md)
               [--max-sessions-per-peer <n>] [--no-route | --generate-token <file>] [--generate-max-k <n>]   quotas and routed generation (protocols/generate.md)
  meshllm generate "<prompt>" --bootstrap <multiaddr>… [-k <n>] [--max-tokens <n>] [--temperature <t>] [--top-k <n>] [--top-p <p>] [--seed <n>] [--stop <s>]… [--rule mixture|product|median|trimmed] [--json]
      [--weighting uniform|perplexity] [--tail uniform|unigram|bounded|context]   expert weights and tail model (docs/quality.md)
      [--speculative [--drafter ngram|<model>]]   lossless speculative decoding (default drafter: meshtest-a)
      [--governance <file>] [--tokenizer <model>]
  meshllm generate "<prompt>" --via <multiaddr> [same options but --weighting/--tail/--speculative: the routing peer's defaults apply] [--generate-token <file>]
  meshllm status --bootstrap <multiaddr>… [--json]
  meshllm demo [--max-tokens <n>] [-k <n>]
  meshllm agent --once --bootstrap <multiaddr>… [--json] [--db <file>] [--governance <file>] [-k <n>] [--min-experts <n>] [--max-tokens <n>]
  meshllm agent --interval <1m…24h> --bootstrap <multiaddr>… [same options]
  meshllm tasks [--db <file>] [--state <state>] [--limit <n>] [--json]
  meshllm eval --heldout <file> --bootstrap <multiaddr>… [-k <n>] [--experts <peer id>,…] [--max-tokens <n>] [--rules …] [--weighting …] [--tails …] [--json]
keyholders:
  meshllm keys generate --out <file>
  meshllm governance init --keyholder <public key>… --out <file> [--mesh-id <id>]
  meshllm governance show [--governance <file>] [--bootstrap <multiaddr>…]
  meshllm halt --key <file> --reason <text> --bootstrap <multiaddr>… [--governance <file>]
  meshllm resume --key <file> [--key <file>]… --bootstrap <multiaddr>… [--governance <file>]
  meshllm vote <motion id> --approve|--reject --key <file> --bootstrap <multiaddr>…
  meshllm phase <0-4> --key <file>… --bootstrap <multiaddr>…
  meshllm sign halt|resume|vote|phase [args] --key <file>… --out <file>   |   meshllm sign --in <file> --key <file> --out <file>
  meshllm submit <file> --bootstrap <multiaddr>…`

const int = intOption

const GEN_OPTIONS = {
  bootstrap: { type: 'string', multiple: true },
  via: { type: 'string' },
  k: { type: 'string', short: 'k' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  rule: { type: 'string' },
  tail: { type: 'string' },
  weighting: { type: 'string' },
  tokenizer: { type: 'string' },
  governance: { type: 'string' },
  speculative: { type: 'boolean' },
  drafter: { type: 'string' },
  'generate-token': { type: 'string' },
  json: { type: 'boolean' }
} as const

async function join (args: string[]): Promise<void> {
  const { values } = parse(args, {
    model: { type: 'string' },
    listen: { type: 'string', multiple: true },
    announce: { type: 'string', multiple: true },
    bootstrap: { type: 'string', multiple: true },
    'data-dir': { type: 'string' },
    threads: { type: 'string' },
    'max-sessions': { type: 'string' },
    'max-sessions-per-peer': { type: 'string' },
    'no-route': { type: 'boolean' },
    'generate-token': { type: 'string' },
    'generate-max-k': { type: 'string' },
    'context-size': { type: 'string' },
    gpu: { type: 'string' },
    'idle-timeout': { type: 'string' },
    governance: { type: 'string' },
    grpc: { type: 'string' },
    http: { type: 'string' },
    'api-token': { type: 'string' },
    'api-token-file': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'insecure-behind-proxy': { type: 'boolean' }
  })
  if (values.model == null) throw new UsageError('join needs --model <path|uri>')
  const [{ startExpert }, { parseMultiaddr }, { defaultDataDir, lockDataDir }, { Router, verifyHaltWith }, { RouterTokenizer }, { generateService, generateTokenFrom }, { fingerprintHex }, { resolveModel }, { ProgressBar }, { governanceConfigFrom, refuseDevGovernanceOffLoopback }, { GovernanceState }, { GovernanceService }, { configDigest }, { ChangeLog, revertOnHalt }] = await Promise.all([
    import('../expert/expert.js'), import('../node/node.js'), import('../node/data-dir.js'), import('../router/router.js'), import('../router/tokenizer.js'),
    import('../router/generate-service.js'), import('../expert/tokenizer.js'), import('../expert/resolve.js'), import('./progress.js'), import('./governance-cli.js'),
    import('../governance/state.js'), import('../governance/service.js'), import('../governance/config.js'), import('../governance/changelog.js')
  ])
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

function printResult (r: GenerateResult, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify({
      text: r.text,
      tokens: r.tokens,
      elapsedMs: Math.round(r.elapsedMs * 10) / 10,
      tokensPerSecond: Math.round(r.tokensPerSecond * 100) / 100,
      k: r.k,
      effectiveK: r.effectiveK,
      experts: r.experts,
      bytesPerExpertToken: Math.round(r.bytesPerExpertToken * 10) / 10,
      promptTokens: r.promptTokens,
      finishReason: r.finishReason,
      warnings: r.warnings,
      ...(r.speculation != null ? { speculation: r.speculation } : {}),
      steps: r.steps.map(s => s.experts)
    }) + '\n')
  } else {
    process.stdout.write('\n')
    process.stderr.write(`${r.tokens} tokens in ${(r.elapsedMs / 1000).toFixed(2)} s (${r.tokensPerSecond.toFixed(1)} tokens/s), K=${r.effectiveK}, ${r.experts.length} expert(s), ${r.bytesPerExpertToken.toFixed(0)} bytes per expert per token\n`)
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
  }
}

async function generate (args: string[]): Promise<void> {
  const { values, positionals } = parse(args, GEN_OPTIONS)
  const prompt = positionals.join(' ')
  if (prompt.length === 0) throw new UsageError('generate needs a prompt')
  const bootstrap: string[] = values.bootstrap ?? []
  if (bootstrap.length === 0 && values.via == null) throw new UsageError('generate needs --bootstrap <multiaddr> or --via <multiaddr>')
  if (values.via != null && (values.tail != null || values.weighting != null)) throw new UsageError('--tail and --weighting are not carried by --via (the routing peer aggregates)')
  if (values.via != null && (values.speculative === true || values.drafter != null)) throw new UsageError('--speculative and --drafter need --bootstrap (this process routes): --via does not carry them')
  if (values.drafter != null && values.speculative !== true) throw new UsageError('--drafter goes with --speculative')
  // the one validation of every interface (src/router/options.ts): InvalidGenerateOptionError, exit 2
  const n = (v: string | undefined): number | undefined => v == null ? undefined : Number(v)
  const v = validateGenerateOptions({ k: n(values.k), maxTokens: n(values['max-tokens']), temperature: n(values.temperature), topK: n(values['top-k']), topP: n(values['top-p']), seed: n(values.seed), rule: values.rule, tail: values.tail, weighting: values.weighting })
  const D = GENERATE_DEFAULTS
  const opts = {
    k: v.k ?? D.k,
    maxTokens: v.maxTokens ?? D.maxTokens,
    temperature: v.temperature ?? D.temperature,
    topK: v.topK ?? D.topK,
    topP: v.topP ?? D.topP,
    seed: v.seed,
    stop: values.stop,
    rule: v.rule ?? D.rule,
    tail: v.tail ?? D.tail,
    weighting: v.weighting ?? D.weighting,
    speculative: values.speculative === true,
    onToken: values.json === true ? undefined : (t: { text: string }) => { process.stdout.write(t.text) }
  }
  const json = values.json === true
  const [{ createMeshNode, parseMultiaddr }, { generateTokenFrom, generateVia }] = await Promise.all([import('../node/node.js'), import('../router/generate-service.js')])
  if (values['generate-token'] != null && values.via == null) throw new UsageError('--generate-token goes with --via')
  const generateToken = values.via != null ? await generateTokenFrom(values['generate-token']) : undefined
  for (const a of bootstrap) parseMultiaddr(a)
  if (values.via != null) {
    const via = parseMultiaddr(values.via)
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    try {
      printResult(await generateVia(node, via, prompt, { ...opts, token: generateToken }), json)
    } finally {
      await node.stop()
    }
    return
  }
  const [{ governanceClient, governanceConfigFrom }, { RouterTokenizer }, { Router, verifyHaltWith }] = await Promise.all([import('./governance-cli.js'), import('../router/tokenizer.js'), import('../router/router.js')])
  const { node, gov, close } = await governanceClient(await governanceConfigFrom(values.governance, true), bootstrap)
  const tokenizer = await RouterTokenizer.load(values.tokenizer ?? 'meshtest-c')
  const drafter = values.speculative === true ? await loadDrafter(values.drafter) : undefined
  try {
    const router = new Router(node, tokenizer, { haltReason: () => gov.haltReason, verifyHalt: verifyHaltWith(gov), drafter })
    gov.on({ onHalt: (reason: string) => router.abortAll(reason) })
    printResult(await router.generate(prompt, opts), json)
  } finally {
    await drafter?.close()
    await tokenizer.close()
    await close()
  }
}

/** `--drafter ngram` or a model (default: the bundled meshtest-a) */
async function loadDrafter (spec: string | undefined): Promise<Drafter> {
  const { ModelDrafter, NgramDrafter } = await import('../router/drafter.js')
  if (spec === 'ngram') return new NgramDrafter()
  return await ModelDrafter.load(spec ?? 'meshtest-a')
}

function exitCodeFor (err: any): number {
  // RemoteGenerateError (--via): the routing peer's error name decides
  const name = err?.name === 'RemoteGenerateError' && typeof err.remoteName === 'string' ? err.remoteName : err?.name
  switch (name) {
    case 'UsageError': case 'DevGovernanceError': case 'DataDirInUseError': case 'GenerateTokenFileError': case 'BadMultiaddrError': case 'GovernanceConfigError': case 'GovernanceKeyError': case 'ApiConfigError': case 'ApiTokenError': case 'ApiTlsError': case 'InsecureBindError': return EXIT.USAGE
    case 'InvalidGenerateOptionError': return EXIT.USAGE
    case 'NoExpertsError': return EXIT.NO_EXPERTS
    case 'IncompatibleTokenizerError': return EXIT.INCOMPATIBLE
    case 'ContextOverflowError': return EXIT.CONTEXT
    case 'ModelNotFoundError': return EXIT.MODEL_NOT_FOUND
    case 'NoPeersError': return EXIT.NO_PEERS
    case 'HaltedError': return EXIT.HALTED
    case 'GovernanceRefusedError': return EXIT.REFUSED
    default: return EXIT.ERROR
  }
}

export async function main (argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv
  // Deadlines here are AbortSignal.timeout()s, whose timers do not keep the event loop
  // alive: should every socket close while a promise still waits on one of them (a
  // connection closing during node.stop(), say), Node would exit with code 13 ("unsettled
  // top-level await") instead of letting the deadline fire. Every command ends in
  // process.exit, so this timer never delays an exit.
  setInterval(() => {}, 3_600_000)
  try {
    switch (cmd) {
      case 'join': await join(rest); break
      case 'generate': await generate(rest); break
      case 'status': await (await import('./status.js')).statusCommand(rest, parse); break
      case 'demo': await (await import('./demo.js')).runDemo(rest, parse); break
      // loaded on demand: node:sqlite prints an ExperimentalWarning when imported
      case 'agent': await (await import('../agent/cli.js')).agentCommand(rest, parse); break
      case 'tasks': await (await import('../agent/cli.js')).tasksCommand(rest, parse); break
      case 'eval': await (await import('../eval/cli.js')).evalCommand(rest, parse); break
      case 'keys': await (await import('./governance-cli.js')).keysCommand(rest, parse); break
      case 'governance': await (await import('./governance-cli.js')).governanceCommand(rest, parse); break
      case 'halt': case 'resume': case 'vote': case 'phase': await (await import('./governance-cli.js')).keyholderCommand(cmd, rest, parse); break
      case 'sign': await (await import('./governance-cli.js')).signCommand(rest, parse); break
      case 'submit': await (await import('./governance-cli.js')).submitCommand(rest, parse); break
      case undefined: case 'help': case '--help': case '-h':
        process.stdout.write(USAGE + '\n')
        process.exit(cmd === undefined ? EXIT.USAGE : EXIT.OK)
        break
      default:
        throw new UsageError(`unknown command "${cmd}"\n${USAGE}`)
    }
    process.exit(EXIT.OK)
  } catch (err: any) {
    process.stderr.write(`meshllm: ${err?.message ?? String(err)}\n`)
    if (process.env.MESHLLM_DEBUG != null) process.stderr.write(`${err?.stack}\n`)
    process.exit(exitCodeFor(err))
  }
}
