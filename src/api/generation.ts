/**
 * The generation facade of the API: a request is checked once (the halt, the options through
 * the schema every interface shares, src/router/options.ts, the prompt, the experts online and
 * their context) before any token is generated, then run with the API's deadline. Also the
 * chat template and the OpenAI model ids.
 */
import type { GenerateResult, TokenEvent } from '../router/router.js'
import { HaltedError, NoExpertsError, IncompatibleTokenizerError, errorName } from '../util/errors.js'
import { GENERATE_DEFAULTS, InvalidGenerateOptionError, validateGenerateOptions, type ValidGenerateOptions } from '../router/options.js'
import { ApiError, invalid, toApiError } from './errors.js'
import { ChatFormatter, type ChatMessage } from './chat.js'
import type { GovernanceApi } from './governance-api.js'
import type { StatusApi } from './status.js'
import type { ApiContext, GenerateParams, PreparedGeneration } from './types.js'

export class GenerationApi {
  private chat?: ChatFormatter

  /** `chatTemplate`: a Jinja chat template overriding the model's */
  constructor (
    private readonly ctx: ApiContext,
    private readonly governance: GovernanceApi,
    private readonly status: StatusApi,
    private readonly chatTemplate?: string
  ) {}

  /** Validates a request against the mesh (halt, experts online, the experts' context) before any token is generated. */
  async prepare (p: GenerateParams, signal?: AbortSignal): Promise<PreparedGeneration> {
    this.governance.checkHalt()
    const nMax = p.names?.maxTokens ?? 'max_tokens'
    const nPrompt = p.names?.prompt ?? 'prompt'
    // the one validation of every interface (src/router/options.ts): every option, the same ranges and messages
    let v: ValidGenerateOptions
    try {
      v = validateGenerateOptions({
        k: p.k,
        maxTokens: p.maxTokens,
        temperature: p.temperature,
        topK: p.topK,
        topP: p.topP,
        seed: p.seed,
        stop: p.stop ?? [],
        rule: p.rule === '' ? undefined : p.rule
      }, { maxTokens: this.ctx.maxTokensLimit, maxTokensName: nMax })
    } catch (err) {
      if (err instanceof InvalidGenerateOptionError) throw invalid(err.message, err.option, err.option === 'rule' ? 'unknown_rule' : null)
      throw err
    }
    const { maxTokens, temperature, topK, topP, seed } = v
    const k = v.k ?? this.ctx.defaultK
    const rule = v.rule ?? GENERATE_DEFAULTS.rule

    let tokens: number[]
    if (typeof p.prompt === 'string') {
      tokens = this.ctx.router.tokenizer.encodePrompt(p.prompt)
    } else {
      const vocab = this.ctx.router.tokenizer.vocabSize
      if (p.prompt.length === 0) throw invalid(`${nPrompt} must not be empty`, nPrompt)
      for (const t of p.prompt) if (!Number.isInteger(t) || t < 0 || t >= vocab) throw invalid(`token ids must be integers in [0, ${vocab})`, nPrompt)
      tokens = [...p.prompt]
    }

    // a generation needs K experts, not the router's whole sample: a stale sample that has them is refreshed off this request's path
    // (named experts may not be among the first found: then the whole sample)
    const first = p.experts != null && p.experts.length > 0 ? undefined : k
    let { compatible, incompatible } = await this.status.refreshExperts(false, signal, first)
    if (compatible.length === 0) ({ compatible, incompatible } = await this.status.refreshExperts(true, signal, first))
    if (p.experts != null && p.experts.length > 0) {
      const want = new Set(p.experts)
      compatible = compatible.filter(r => want.has(r.peerId.toString()))
      if (compatible.length === 0) {
        throw new ApiError('unavailable', `none of the requested experts is online (${p.experts.length} asked)`, 'experts', 'no_experts')
      }
    }
    if (compatible.length === 0) {
      if (incompatible.length > 0) throw toApiError(new IncompatibleTokenizerError(`found ${incompatible.length} expert(s), none with this router's tokenizer`))
      throw toApiError(new NoExpertsError('no experts found on the mesh'))
    }
    const contextLength = Math.min(...compatible.map(r => r.contextLength))
    const room = contextLength - 1 - tokens.length
    if (room < 1) {
      const message = `the prompt has ${tokens.length} tokens; the experts' context is ${contextLength} tokens (1 needed for generation)`
      throw invalid(message, nPrompt, 'context_length_exceeded')
    }
    if (maxTokens != null && maxTokens > room) {
      const message = `${nMax} of ${maxTokens} is beyond the context: the experts' context is ${contextLength} tokens ` +
        `and the prompt has ${tokens.length}, so at most ${room} can be generated`
      throw invalid(message, nMax, 'context_length_exceeded')
    }
    return {
      tokens,
      promptTokens: tokens.length,
      contextLength,
      options: {
        k,
        maxTokens: maxTokens ?? Math.min(room, p.defaultMaxTokens ?? GENERATE_DEFAULTS.maxTokens),
        temperature,
        topK,
        topP,
        seed,
        stop: v.stop,
        rule,
        experts: p.experts != null && p.experts.length > 0 ? compatible.map(r => r.peerId.toString()) : undefined,
        ignoreEos: p.ignoreEos === true
      }
    }
  }

  /** Runs a prepared generation; errors come out as ApiError. */
  async generate (prep: PreparedGeneration, o: { onToken?: (t: TokenEvent) => void, signal?: AbortSignal } = {}): Promise<GenerateResult> {
    const limitMs = this.ctx.generateTimeoutMs
    const timeout = AbortSignal.timeout(limitMs)
    const signal = o.signal != null ? AbortSignal.any([o.signal, timeout]) : timeout
    try {
      this.governance.checkHalt()
      return await this.ctx.router.generate(prep.tokens, { ...prep.options, signal, onToken: o.onToken })
    } catch (err) {
      if (err instanceof HaltedError || errorName(err) === 'HaltedError') throw toApiError(err)
      if (timeout.aborted) throw new ApiError('deadline_exceeded', `generation exceeded ${limitMs} ms`, null, 'timeout')
      if (o.signal?.aborted === true) {
        const reason = o.signal.reason
        if (reason instanceof ApiError) throw reason
        throw new ApiError('deadline_exceeded', 'the request was cancelled or its deadline passed', null, 'cancelled')
      }
      throw toApiError(err)
    }
  }

  chatFormatter (): ChatFormatter {
    this.chat ??= ChatFormatter.create(this.ctx.router.tokenizer, { template: this.chatTemplate })
    return this.chat
  }

  formatChat (messages: ChatMessage[]): ReturnType<ChatFormatter['format']> {
    return this.chatFormatter().format(messages)
  }

  /** OpenAI model ids: "meshllm" (the whole mesh) and every compatible expert model name */
  async modelIds (): Promise<string[]> {
    const cached = this.status.cachedExperts()
    const r = cached.at > 0 ? cached : await this.status.refreshExperts(false)
    return ['meshllm', ...new Set(r.compatible.map(x => x.modelName))]
  }

  /** expert restriction for an OpenAI model id; throws invalid_argument for an unknown one */
  async expertsForModel (model: string): Promise<string[] | undefined> {
    if (model === 'meshllm') return undefined
    let r = await this.status.refreshExperts(false)
    if (!r.compatible.some(x => x.modelName === model)) r = await this.status.refreshExperts(true)
    const ids = r.compatible.filter(x => x.modelName === model).map(x => x.peerId.toString())
    if (ids.length === 0) {
      const known = JSON.stringify(await this.modelIds())
      const message = `The model \`${model.slice(0, 128)}\` does not exist on this mesh: use "meshllm" (the whole mesh) or one of ${known}`
      throw invalid(message, 'model', 'model_not_found')
    }
    return ids
  }
}
