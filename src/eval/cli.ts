/**
 * `meshllm eval`: teacher-forced perplexity of each expert and of the ensemble variants on
 * held-out text, through the real protocol (src/eval/eval.ts, docs/quality.md).
 *
 *   meshllm eval --heldout <file> --bootstrap <multiaddr>… [-k <n>] [--experts <peer id>[,…]]…
 *                [--max-tokens <n>] [--window <n>] [--prompt <n>] [--rules mixture,product,median]
 *                [--weighting uniform,fixed,perplexity] [--tails uniform,unigram,bounded,context]
 *                [--weights <peer id or model>=<w>,…] [--beta <β>] [--subsets] [--robust off,on] [--json]
 */
import { createMeshNode, connectBootstrap, parseMultiaddr } from '../node/node.js'
import { Router } from '../router/router.js'
import { RouterTokenizer } from '../router/tokenizer.js'
import { LocalModel } from '../router/local-model.js'
import type { AggregationRule } from '../aggregate/types.js'
import { RULES as ALL_RULES, TAILS as ALL_TAILS, WEIGHTINGS as ROUTER_WEIGHTINGS } from '../router/options.js'
import type { TailModel } from '../aggregate/general.js'
import { evaluateMesh, readHeldout, DEFAULT_RULES, DEFAULT_TAILS, DEFAULT_WEIGHTINGS, type EvalResult, type Weighting } from './eval.js'
import { UsageError } from '../cli/errors.js'
import { intOption } from '../cli/args.js'
import { ProgressBar } from '../cli/progress.js'

const RULES: AggregationRule[] = [...ALL_RULES]
/** the router's weightings (src/router/options.ts) and `fixed` (--weights), which only eval has */
export const EVAL_WEIGHTINGS: Weighting[] = [...ROUTER_WEIGHTINGS, 'fixed']
const TAILS: TailModel[] = [...ALL_TAILS]

async function usage (message: string): Promise<never> {
  throw new UsageError(message)
}

async function list<T extends string> (v: string | undefined, name: string, allowed: T[], dflt: T[]): Promise<T[]> {
  if (v == null) return dflt
  const xs = v.split(',').map(s => s.trim()).filter(s => s.length > 0)
  for (const x of xs) if (!allowed.includes(x as T)) await usage(`--${name}: "${x}" is not one of ${allowed.join(', ')}`)
  if (xs.length === 0) await usage(`--${name} needs at least one of ${allowed.join(', ')}`)
  return xs as T[]
}

async function int (v: string | undefined, name: string, min: number, max = Number.MAX_SAFE_INTEGER): Promise<number | undefined> {
  return intOption(v, name, min, max)
}

/** the option values of `meshllm eval` (src/cli/commands/eval.ts): strings, as on the command line */
export interface EvalValues {
  heldout?: string
  bootstrap?: string[]
  k?: string
  experts?: string[]
  'max-tokens'?: string
  window?: string
  prompt?: string
  rules?: string
  weighting?: string
  tails?: string
  weights?: string
  beta?: string
  subsets?: boolean
  robust?: string
  documents?: string
  'local-model'?: string
  frames?: 'compact' | 'full'
  tokenizer?: string
  json?: boolean
}

/** `meshllm eval` (options and --help: src/cli/commands/eval.ts) */
export async function evalCommand (values: EvalValues): Promise<void> {
  const result = await runEvalCommand(values)
  if (values.json === true) process.stdout.write(JSON.stringify(result) + '\n')
  else process.stdout.write(formatEvalResult(result))
}

/** The command on already-parsed option values (strings, as on the command line); returns the result without printing it. */
export async function runEvalCommand (values: EvalValues): Promise<EvalResult> {
  if (values.heldout == null) return await usage('eval needs --heldout <file>')
  const bootstrap: string[] = values.bootstrap ?? []
  if (bootstrap.length === 0) await usage('eval needs --bootstrap <multiaddr>')
  for (const a of bootstrap) parseMultiaddr(a)
  const experts: string[] | undefined = values.experts?.flatMap(s => s.split(',')).map(s => s.trim()).filter(s => s.length > 0)
  let fixedWeights: Record<string, number> | undefined
  if (values.weights != null) {
    fixedWeights = {}
    for (const kv of String(values.weights).split(',')) {
      const [key, w] = kv.split('=')
      const n = Number(w)
      if (key == null || key === '' || !Number.isFinite(n) || n < 0) await usage(`--weights: "${kv}" is not <peer id or model>=<weight ≥ 0>`)
      fixedWeights[key.trim()] = n
    }
  }
  const beta = values.beta != null ? Number(values.beta) : undefined
  if (beta !== undefined && !(beta >= 0 && beta < 1000)) await usage(`--beta must be a number in [0, 1000), got "${values.beta}"`)
  const opts = {
    k: await int(values.k, 'k', 1),
    experts,
    maxPositions: await int(values['max-tokens'], 'max-tokens', 1) ?? 1500,
    window: await int(values.window, 'window', 2, 256),
    prompt: await int(values.prompt, 'prompt', 0, 254),
    rules: await list(values.rules, 'rules', RULES, DEFAULT_RULES),
    weighting: await list(values.weighting, 'weighting', EVAL_WEIGHTINGS, DEFAULT_WEIGHTINGS),
    tails: values.tails != null ? await list(values.tails, 'tails', TAILS, DEFAULT_TAILS) : undefined,
    fixedWeights,
    beta,
    subsets: values.subsets === true,
    robust: (await list(values.robust, 'robust', ['off', 'on'], ['off', 'on'])).map(x => x === 'on')
  }
  let documents: [number, number] | undefined
  if (values.documents != null) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(String(values.documents).trim())
    if (m == null) await usage(`--documents: "${values.documents}" is not <first>[-<last>] (0-based document indices)`)
    const first = Number(m![1])
    const last = m![2] != null ? Number(m![2]) : Number.MAX_SAFE_INTEGER
    if (last < first) await usage(`--documents: ${last} is before ${first}`)
    documents = [first, last]
  }
  const localSpec = values['local-model']
  const heldout = readHeldout(values.heldout)
  // a terminal gets one line redrawn in place, a log whole lines every 10 %
  const bar = values.json === true ? undefined : new ProgressBar('eval', { width: 0 })
  const node = await createMeshNode({ listen: [], dhtServer: false })
  await node.start()
  const tokenizer = await RouterTokenizer.load(values.tokenizer ?? 'meshtest-c')
  let localModel: LocalModel | undefined
  try {
    if (localSpec != null && localSpec !== 'none') localModel = await LocalModel.load(localSpec, { expect: { vocabSize: tokenizer.vocabSize, fingerprint: tokenizer.fingerprint } })
    await connectBootstrap(node, bootstrap)
    const router = new Router(node, tokenizer)
    // the DHT may need a moment to know every expert the caller named
    for (let i = 0; i < 20; i++) {
      const found = (await router.experts(true)).compatible.map(r => r.peerId.toString())
      if (found.length > 0 && (experts == null || experts.every(id => found.includes(id))) && (opts.k == null || found.length >= opts.k)) break
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    return await evaluateMesh({
      router,
      heldout,
      ...opts,
      documents,
      localModel,
      ...(values.frames != null ? { frames: values.frames } : {}),
      onProgress: bar != null ? (n, total) => { bar.update(total > 0 ? n / total : 1, `${n}/${total} positions`) } : undefined
    })
  } finally {
    bar?.done()
    await localModel?.close()
    await tokenizer.close()
    await node.stop()
  }
}

/** human-readable table */
export function formatEvalResult (r: EvalResult): string {
  const f = (x: number | null | undefined): string => x == null ? '—' : x.toFixed(1)
  const lines: string[] = []
  lines.push(`${r.positions} positions (${r.windows} windows of ≤ 256 tokens, ${r.documents} documents), ` +
    `${r.bytesPerExpertToken.toFixed(0)} bytes per expert per token${r.frames != null ? ` (${r.frames} frames)` : ''}`)
  lines.push('')
  lines.push('expert                                                  model          exact   frames: uniform  unigram  bounded  listed')
  for (const [id, x] of Object.entries(r.experts)) {
    const tails = x.perplexityByTail
    lines.push(`${id.padEnd(55)} ${x.model.padEnd(14)} ${f(x.exactPerplexity).padStart(6)}   ` +
      `${f(tails.uniform).padStart(15)}  ${f(tails.unigram).padStart(7)}  ${f(tails.bounded).padStart(7)}  ${(100 * x.listedRate).toFixed(1)}%`)
  }
  lines.push('')
  lines.push('ensemble                 rule      weighting   tail      robust  perplexity')
  for (const v of [...r.variants].sort((a, b) => a.perplexity - b.perplexity)) {
    const models = v.models.map(m => m.replace(/^meshtest-/, '')).join('+')
    const banned = (v.banned ?? []).length > 0 ? `, banned ${(v.banned ?? []).length}` : ''
    const screened = v.robust ? `  (${v.screened ?? 0} frames screened${banned})` : ''
    lines.push(`${models.padEnd(24)} ${v.rule.padEnd(9)} ${v.weighting.padEnd(11)} ${v.tail.padEnd(9)} ${(v.robust ? 'on' : 'off').padEnd(7)} ` +
      `${f(v.perplexity).padStart(10)}${screened}`)
  }
  // what robust-by-default costs an honest mesh: each robust variant against the same one without
  const costs = r.variants.filter(v => v.robust).map(v => {
    const off = r.variants.find(w =>
      !w.robust && w.rule === v.rule && w.weighting === v.weighting && w.tail === v.tail && w.experts.join() === v.experts.join())
    return off != null ? v.perplexity / off.perplexity - 1 : undefined
  }).filter((x): x is number => x !== undefined)
  if (costs.length > 0) {
    lines.push('')
    lines.push(`robust (screening + reputation) vs off, same variant: ${(100 * Math.min(...costs)).toFixed(2)} % to ` +
      `${(100 * Math.max(...costs)).toFixed(2)} % perplexity (${costs.length} variants)`)
  }
  lines.push('')
  const e = r.ensemble
  const b = r.best
  const w = r.weightingParams
  for (const x of r.skipped) lines.push(`skipped: ${x.model} ${x.id}: ${x.error}`)
  if (r.localModel != null) lines.push(`local model (the 'local' tail, not an expert): ${r.localModel.model}${r.localModel.exact ? '' : ' (top-256 only: no native helper)'}`)
  lines.push(`ensemble (the router's default): ${e.models.join('+')} ${e.rule} / ${e.weighting} / ${e.tail}${e.robust ? ' / robust' : ''}: ${f(e.perplexity)}`)
  lines.push(`best: ${b.models.join('+')} ${b.rule} / ${b.weighting} / ${b.tail}${b.robust ? ' / robust' : ''}: ${f(b.perplexity)} ` +
    `(perplexity weighting β = ${w.beta}, n₀ = ${w.priorTokens}; fixed = ${w.fixed})`)
  return lines.join('\n') + '\n'
}
