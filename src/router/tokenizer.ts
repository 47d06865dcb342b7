/**
 * The router's tokenizer: the vocabulary of a GGUF loaded vocab-only (no weights), by
 * default the bundled meshtest-c's LLaMA-3 tokenizer. Its fingerprint decides which experts
 * the router accepts.
 */
import { getLlama, LlamaLogLevel, type LlamaModel, type Token } from 'node-llama-cpp'
import { resolveModel } from '../expert/resolve.js'
import { summarizeGguf, type GgufSummary } from '../expert/tokenizer.js'

export class RouterTokenizer {
  private constructor (readonly model: LlamaModel, readonly summary: GgufSummary, private readonly owned = true) {}

  /** the tokenizer of a model loaded elsewhere (a router's local model): close() leaves the model to its owner */
  static fromModel (model: LlamaModel, summary: GgufSummary): RouterTokenizer {
    return new RouterTokenizer(model, summary, false)
  }

  static async load (spec = 'meshtest-c'): Promise<RouterTokenizer> {
    const path = await resolveModel(spec)
    const summary = await summarizeGguf(path)
    const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: 'never' })
    const model = await llama.loadModel({ modelPath: path, vocabOnly: true })
    return new RouterTokenizer(model, summary)
  }

  get fingerprint (): Uint8Array { return this.summary.fingerprint }
  get vocabSize (): number { return this.summary.vocabSize }
  get bos (): number | undefined { return this.model.tokens.bos ?? undefined }

  /** prompt tokens, BOS first when the tokenizer has one */
  encodePrompt (text: string): number[] {
    const toks = this.model.tokenize(text) as number[]
    const bos = this.bos
    return bos != null ? [bos, ...toks] : toks
  }

  decode (tokens: number[]): string {
    return this.model.detokenize(tokens as Token[])
  }

  isEndOfGeneration (token: number): boolean {
    return this.model.isEogToken(token as Token)
  }

  async close (): Promise<void> {
    if (this.owned) await this.model.dispose()
  }
}
