/**
 * `meshllm generate` (options: src/cli/commands/generate.ts): this process routes (--bootstrap)
 * or asks a mesh peer to route (--via). Loaded only when the command runs; the --via path
 * never loads node-llama-cpp.
 */
import type { GenerateResult } from '../router/router.js'
import type { Drafter } from '../router/drafter.js'
import { GENERATE_DEFAULTS, validateGenerateOptions } from '../router/options.js'
import { UsageError } from './errors.js'
import type { Values } from './args.js'

/** reach: how this process reached each expert (routing here, not --via) */
function printResult (r: GenerateResult, json: boolean, reach?: Record<string, string>): void {
  if (json) {
    process.stdout.write(JSON.stringify({
      text: r.text,
      tokens: r.tokens,
      elapsedMs: Math.round(r.elapsedMs * 10) / 10,
      ...(r.ttftMs !== undefined ? { ttftMs: Math.round(r.ttftMs * 10) / 10 } : {}),
      tokensPerSecond: Math.round(r.tokensPerSecond * 100) / 100,
      k: r.k,
      effectiveK: r.effectiveK,
      experts: r.experts,
      bytesPerExpertToken: Math.round(r.bytesPerExpertToken * 10) / 10,
      promptTokens: r.promptTokens,
      finishReason: r.finishReason,
      warnings: r.warnings,
      ...(r.speculation != null ? { speculation: r.speculation } : {}),
      ...(reach != null ? { reach } : {}),
      steps: r.steps.map(s => s.experts)
    }) + '\n')
  } else {
    process.stdout.write('\n')
    process.stderr.write(`${r.tokens} tokens in ${(r.elapsedMs / 1000).toFixed(2)} s (${r.tokensPerSecond.toFixed(1)} tokens/s${r.ttftMs !== undefined ? `, first after ${(r.ttftMs / 1000).toFixed(2)} s` : ''}), K=${r.effectiveK}, ${r.experts.length} expert(s), ${r.bytesPerExpertToken.toFixed(0)} bytes per expert per token\n`)
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
  }
}

/** `values.prompt`: the words of the prompt (joined with spaces) */
export async function generate (values: Values): Promise<void> {
  const prompt = ([values.prompt ?? []].flat() as unknown[]).map(String).join(' ')
  if (prompt.length === 0) throw new UsageError('generate needs a prompt')
  const bootstrap: string[] = values.bootstrap ?? []
  if (values.via != null && (values.tail != null || values.weighting != null || values['local-model'] != null)) throw new UsageError('--tail, --weighting and --local-model are not carried by --via (the routing peer aggregates)')
  if (values.tail === 'local' && values['local-model'] === 'none') throw new UsageError('--tail local needs a local model (--local-model is none)')
  if (values.via != null && (values.speculative === true || values.drafter != null)) throw new UsageError('--speculative and --drafter need --bootstrap (this process routes): --via does not carry them')
  if (values.drafter != null && values.speculative !== true) throw new UsageError('--drafter goes with --speculative')
  if (values.via != null && values['record-cache'] != null) throw new UsageError('--record-cache needs --bootstrap (this process routes): --via does not use it')
  if (values.via != null && values.frames != null) throw new UsageError('--frames needs --bootstrap (this process routes): --via does not carry it')
  if (values['record-cache'] === '') throw new UsageError('--record-cache needs a file (or none)')
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
    // undefined: the router's default ('local' with its local model, else GENERATE_DEFAULTS.tail)
    tail: v.tail,
    weighting: v.weighting ?? D.weighting,
    speculative: values.speculative === true,
    onToken: values.json === true ? undefined : (t: { text: string }) => { process.stdout.write(t.text) }
  }
  const json = values.json === true
  const [{ createMeshNode, parseMultiaddr }, { DEFAULT_VIA_MS, generateTokenFrom, generateVia }] = await Promise.all([import('../node/node.js'), import('../router/generate-service.js')])
  if (values['generate-token'] != null && values.via == null) throw new UsageError('--generate-token goes with --via')
  const generateToken = values.via != null ? await generateTokenFrom(values['generate-token']) : undefined
  for (const a of bootstrap) parseMultiaddr(a)
  if (values.via != null) {
    const via = parseMultiaddr(values.via)
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    try {
      printResult(await generateVia(node, via, prompt, { ...opts, token: generateToken, signal: AbortSignal.timeout(DEFAULT_VIA_MS) }), json)
    } finally {
      await node.stop()
    }
    return
  }
  const [{ governanceConfigFrom, refuseDevGovernanceOffLoopback }, { MeshPeer }] = await Promise.all([import('./governance-cli.js'), import('../peer/mesh-peer.js')])
  const governance = await governanceConfigFrom(values.governance, true)
  refuseDevGovernanceOffLoopback(governance, bootstrap)
  const drafter = values.speculative === true ? await loadDrafter(values.drafter) : undefined
  // the local model: by default the tokenizer's own model, loaded once for both (≈ 2.3 s,
  // mostly llama.cpp's vocabulary, which the tokenizer alone costs too) while the mesh peer
  // starts, dials its bootstrap peers and catches up with governance; another model loads
  // meanwhile too and is awaited by the first step that needs it
  const tokenizerSpec = values.tokenizer ?? 'meshtest-c'
  const localSpec = values['local-model'] ?? tokenizerSpec
  let tokenizer: Promise<import('../router/tokenizer.js').RouterTokenizer> | string | undefined = values.tokenizer
  let localModel: Promise<import('../router/local-model.js').LocalModel> | undefined
  if (localSpec === tokenizerSpec) {
    localModel = import('../router/local-model.js').then(async ({ LocalModel }) => await LocalModel.load(localSpec))
    localModel.catch(() => {}) // MeshPeer.start awaits the tokenizer: its error surfaces there
    tokenizer = localModel.then(local => local.tokenizer())
    tokenizer.catch(() => {}) // (awaited by MeshPeer.start, unless the peer fails to start first)
  } else if (localSpec !== 'none') {
    localModel = loadLocalModel(localSpec, values.tokenizer)
    localModel.catch(() => {}) // its error surfaces at the first step that needs it
  }
  try {
    // a routing-only peer: its governance (caught up first) is the only one that can halt it
    // no --bootstrap (nor MESHLLM_BOOTSTRAP, nor a config file): find the mesh on this LAN with mDNS
    const lan = bootstrap.length === 0
    // the experts an earlier run found in this mesh (named by its bootstrap and governance)
    const { RecordCache, defaultRecordCachePath, meshName } = await import('../router/record-cache.js')
    const cacheSpec = values['record-cache'] ?? defaultRecordCachePath()
    const recordCache = cacheSpec === 'none' ? undefined : new RecordCache(cacheSpec, { mesh: meshName(bootstrap, governance) })
    const peer = await MeshPeer.start({ bootstrap, governance, tokenizer, router: { drafter, localModel, recordCache, ...(values.frames != null ? { frames: values.frames } : {}) }, catchUpMs: 5_000, ...(lan ? { reach: { mdns: true } } : {}) })
    try {
      if (lan) await joinLan(peer)
      const r = await peer.router.generate(prompt, opts)
      // the experts this run found, for the next one (the process exits right after)
      await peer.router.saveRecordCache()
      const { reachOf } = await import('../node/reach.js')
      const { peerIdFromString } = await import('@libp2p/peer-id')
      printResult(r, json, Object.fromEntries(r.experts.map(id => [id, reachOf(peer.node, peerIdFromString(id)) ?? 'closed'])))
    } finally {
      await peer.stop()
    }
  } finally {
    await (await localModel?.catch(() => undefined))?.close()
    await drafter?.close()
  }
}

/** the router's local model, its tokenizer checked against the router's (LocalModelMismatchError) */
async function loadLocalModel (spec: string, tokenizer: string | undefined): Promise<import('../router/local-model.js').LocalModel> {
  const [{ LocalModel }, { RouterTokenizer }] = await Promise.all([import('../router/local-model.js'), import('../router/tokenizer.js')])
  const tok = await RouterTokenizer.load(tokenizer ?? 'meshtest-c')
  try {
    return await LocalModel.load(spec, { expect: { vocabSize: tok.vocabSize, fingerprint: tok.fingerprint } })
  } finally {
    await tok.close()
  }
}

/** how long `generate` without --bootstrap looks for mesh peers on the LAN (ms) */
const LAN_WAIT_MS = 15_000

/** waits for a DHT peer found by mDNS, then catches up with the mesh's governance through it */
async function joinLan (peer: import('../peer/mesh-peer.js').MeshPeer): Promise<void> {
  const [{ waitForDhtPeers }, { NoPeersError }] = await Promise.all([import('../node/node.js'), import('../util/errors.js')])
  if (!await waitForDhtPeers(peer.node, LAN_WAIT_MS)) throw new NoPeersError(`no --bootstrap (nor MESHLLM_BOOTSTRAP or a config file) and no mesh peer answered mDNS on this LAN within ${LAN_WAIT_MS / 1000} s`)
  await peer.governance.syncAll({ signal: AbortSignal.timeout(5_000) })
}

/** `--drafter ngram` or a model (default: the bundled meshtest-a) */
async function loadDrafter (spec: string | undefined): Promise<Drafter> {
  const { ModelDrafter, NgramDrafter } = await import('../router/drafter.js')
  if (spec === 'ngram') return new NgramDrafter()
  return await ModelDrafter.load(spec ?? 'meshtest-a')
}
