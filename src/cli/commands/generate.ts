/** `meshllm generate`: one generation, routed here (--bootstrap) or by a mesh peer (--via). Implementation: src/cli/generate.ts. */
import type { Argv, Options } from 'yargs'
import { flag, rangeText, str, strs, type Command, type Values } from '../args.js'
import { GENERATE_DEFAULTS as D, GENERATE_LIMITS as L, RULES, TAILS, WEIGHTINGS, validateGenerateOptions } from '../../router/options.js'
import { BOOTSTRAP, FRAMES, GOVERNANCE, JSON_OUT, TOKENIZER } from './shared.js'

const last = (v: unknown): unknown => Array.isArray(v) ? v[v.length - 1] : v

/**
 * A named choice (--rule, --weighting, --tail): listed in --help from src/router/options.ts,
 * refused by validateGenerateOptions with the message every interface gives.
 */
function choice (key: 'rule' | 'weighting' | 'tail', describe: string, choices: readonly string[], dflt: string): Options {
  return str(describe, {
    choices: [...choices],
    defaultDescription: dflt,
    coerce: (v: unknown) => {
      const x = last(v)
      validateGenerateOptions({ [key]: x })
      return x
    }
  })
}

export const generate: Command = {
  command: 'generate [prompt..]',
  describe: 'generate text from the mesh\'s experts (K per token)',
  builder: (y: Argv) => y
    .positional('prompt', { describe: 'the prompt (several words are joined with spaces)', type: 'string' })
    .options({
      bootstrap: BOOTSTRAP,
      via: str('a mesh peer that routes this generation (multiaddr); this process then loads no model'),
      k: str(`experts per token (integer ${rangeText(...L.k)})`, { defaultDescription: String(D.k) }),
      'max-tokens': str(`tokens to generate at most (integer ${rangeText(...L.maxTokens)})`, { defaultDescription: String(D.maxTokens) }),
      temperature: str(`sampling temperature (number in [${L.temperature[0]}, ${L.temperature[1]}]; 0 = greedy)`, { defaultDescription: String(D.temperature) }),
      'top-k': str(`sample from the k most likely tokens only (integer ${rangeText(...L.topK)}; 0 = all)`, { defaultDescription: String(D.topK) }),
      'top-p': str(`nucleus sampling mass (number in (${L.topP[0]}, ${L.topP[1]}])`, { defaultDescription: String(D.topP) }),
      seed: str(`sampling seed (integer ${rangeText(...L.seed)})`, { defaultDescription: 'random' }),
      stop: strs('stop generating at this string'),
      rule: choice('rule', 'aggregation rule of the experts\' distributions', RULES, D.rule),
      weighting: choice('weighting', 'expert weights (not with --via: the routing peer\'s defaults apply)', WEIGHTINGS, D.weighting),
      tail: choice('tail', 'model of the probability mass outside an expert\'s frame (not with --via)', TAILS, `local with a local model, else ${D.tail}`),
      'local-model': str('the router\'s own model for the \'local\' tail: a bundled name, .gguf path or URI with the experts\' tokenizer, or none (not with --via)', { defaultDescription: 'the --tokenizer model (meshtest-c)' }),
      speculative: flag('lossless speculative decoding: draft locally, have the experts score the draft (not with --via)'),
      drafter: str('the drafter of --speculative: ngram or a model', { defaultDescription: 'meshtest-a' }),
      'record-cache': str('file of expert records kept across runs: the experts an earlier run found are dialled while the DHT is asked (none: no cache; not with --via)', { defaultDescription: 'records.json in the model cache: $MESHLLM_CACHE, else $XDG_CACHE_HOME/meshllm, else ~/.cache/meshllm' }),
      frames: FRAMES,
      tokenizer: TOKENIZER,
      governance: GOVERNANCE,
      'generate-token': str('with --via: file whose first line is the routing peer\'s token (else $MESHLLM_GENERATE_TOKEN)'),
      json: JSON_OUT
    }),
  handler: async (argv: Values) => {
    const { generate } = await import('../generate.js')
    // words after `--` are part of the prompt too
    await generate({ ...argv, prompt: [...(argv.prompt ?? []), ...(argv._ as unknown[]).slice(1).map(String)] })
  }
}
