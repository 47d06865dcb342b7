/** `meshllm eval`: perplexity of each expert and ensemble variant on held-out text (implementation: src/eval/cli.ts). */
import type { Argv } from 'yargs'
import { flag, int, required, str, strs, type Command, type Values } from '../args.js'
import { RULES, TAILS, WEIGHTINGS } from '../../router/options.js'
import { DEFAULT_PERPLEXITY_BETA } from '../../aggregate/weighting.js'
import { BOOTSTRAP, FRAMES, JSON_OUT, TOKENIZER } from './shared.js'

/** comma-separated choices; the defaults are src/eval/eval.ts DEFAULT_RULES/WEIGHTINGS/TAILS (checked by test/unit/cli-help.spec.ts) */
export const EVAL_LIST_DEFAULTS = Object.freeze({ rules: 'mixture,product,median', weighting: 'uniform,fixed,perplexity,online', tails: 'uniform,unigram,bounded,context', robust: 'off,on' })

export const evalCmd: Command = {
  command: 'eval',
  describe: 'teacher-forced perplexity of each expert and of the ensemble variants on held-out text',
  builder: (y: Argv) => y.options({
    heldout: required(str('held-out text: documents separated by NUL bytes (gzip allowed)')),
    bootstrap: required(BOOTSTRAP),
    k: int('experts in the ensemble', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: 'every expert found or listed, at most 8' }),
    experts: strs('use these experts (peer ids, comma-separated), in this order'),
    'max-tokens': int('positions to evaluate in all', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: '1500' }),
    window: int('window length in tokens, BOS included', 2, 256, { defaultDescription: '256' }),
    prompt: int('document tokens at the start of each window that are prefilled, not evaluated', 0, 254, { defaultDescription: '0' }),
    rules: str(`aggregation rules, comma-separated: ${RULES.join(', ')}`, { defaultDescription: EVAL_LIST_DEFAULTS.rules }),
    weighting: str(`expert weightings, comma-separated: ${[...WEIGHTINGS, 'fixed'].join(', ')} (fixed: --weights)`, { defaultDescription: EVAL_LIST_DEFAULTS.weighting }),
    tails: str(`tail models, comma-separated: ${TAILS.join(', ')} (local: with --local-model)`, { defaultDescription: `${EVAL_LIST_DEFAULTS.tails} (and local with --local-model)` }),
    weights: str('weights of the fixed weighting: <peer id or model>=<weight ≥ 0>,…', { defaultDescription: 'from each expert\'s exact perplexity (hindsight)' }),
    beta: str('β of the perplexity weighting (number in [0, 1000))', { defaultDescription: String(DEFAULT_PERPLEXITY_BETA) }),
    subsets: flag('also every subset of two or more experts'),
    robust: str('without and/or with robust aggregation (screening, reputation), comma-separated: off, on', { defaultDescription: EVAL_LIST_DEFAULTS.robust }),
    documents: str('held-out documents to take windows from: <first>[-<last>], 0-based (docs/quality.md: report 0-30, tuning 31-59, unseen 60-91)', { defaultDescription: 'all, in file order' }),
    'local-model': str("the router's own model for the 'local' tail (a bundled name, .gguf path or URI; never an expert); none: no local model", { defaultDescription: 'none' }),
    frames: FRAMES,
    tokenizer: TOKENIZER,
    json: JSON_OUT
  }),
  handler: async (argv: Values) => {
    const { evalCommand } = await import('../../eval/cli.js')
    await evalCommand(argv)
  }
}
