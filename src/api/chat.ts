/**
 * Chat prompts for /v1/chat/completions: the GGUF's own chat template (metadata
 * `tokenizer.chat_template`, rendered by node-llama-cpp's chat wrappers: a specialised wrapper
 * when it recognises the template, else its Jinja renderer) when the router's tokenizer model
 * has one; otherwise the plain template documented in docs/api.md#chat-template:
 *
 *   System: <system message>\n        (each system / developer message)
 *   User: <user message>\n
 *   Assistant: <assistant message>\n
 *   …
 *   Assistant:
 *
 * with BOS first and "\nUser:" as a stop string (leading whitespace of the reply is dropped).
 */
import { JinjaTemplateChatWrapper, resolveChatWrapper, type ChatHistoryItem, type ChatWrapper } from 'node-llama-cpp'
import type { RouterTokenizer } from '../router/tokenizer.js'
import { invalid } from './errors.js'
import { errorMessage } from '../util/errors.js'

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant'
  content: string
}

export interface FormattedChat {
  tokens: number[]
  /** stop strings the template needs (beyond end-of-generation tokens) */
  stop: string[]
  /** drop whitespace at the start of the reply */
  trimLeading: boolean
}

export const PLAIN_STOP = '\nUser:'

const ROLE_LABEL: Record<ChatMessage['role'], string> = { system: 'System', developer: 'System', user: 'User', assistant: 'Assistant' }

export class ChatFormatter {
  /** 'gguf': the model's chat template; 'custom': a template given to the API; 'plain': the documented fallback */
  readonly kind: 'gguf' | 'custom' | 'plain'
  /** node-llama-cpp wrapper name ('plain' for the fallback) */
  readonly wrapperName: string

  private constructor (private readonly tokenizer: RouterTokenizer, private readonly wrapper: ChatWrapper | undefined, kind: 'gguf' | 'custom' | 'plain') {
    this.kind = kind
    this.wrapperName = wrapper?.wrapperName ?? 'plain'
  }

  /** `template`: a Jinja chat template that overrides the model's (tests, operators) */
  static create (tokenizer: RouterTokenizer, opts: { template?: string } = {}): ChatFormatter {
    if (opts.template != null) {
      return new ChatFormatter(tokenizer, new JinjaTemplateChatWrapper({ template: opts.template, tokenizer: tokenizer.model.tokenizer }), 'custom')
    }
    // a GGUF file may lack any metadata its type declares
    const md: { tokenizer?: { chat_template?: unknown } } | undefined = tokenizer.model.fileInfo?.metadata
    const template = md?.tokenizer?.chat_template
    if (typeof template === 'string' && template.length > 0) {
      const w = resolveChatWrapper(tokenizer.model, { warningLogs: false })
      if (w != null) return new ChatFormatter(tokenizer, w, 'gguf')
    }
    return new ChatFormatter(tokenizer, undefined, 'plain')
  }

  format (messages: ChatMessage[]): FormattedChat {
    if (this.wrapper == null) {
      let text = ''
      for (const m of messages) text += `${ROLE_LABEL[m.role]}: ${m.content}\n`
      text += 'Assistant:'
      return { tokens: this.tokenizer.encodePrompt(text), stop: [PLAIN_STOP], trimLeading: true }
    }
    const history: ChatHistoryItem[] = []
    for (const m of messages) {
      if (m.role === 'system' || m.role === 'developer') history.push({ type: 'system', text: m.content })
      else if (m.role === 'user') history.push({ type: 'user', text: m.content })
      else history.push({ type: 'model', response: [m.content] })
    }
    // an empty model turn: the rendered context ends where the assistant's reply begins
    history.push({ type: 'model', response: [] })
    let state
    try {
      state = this.wrapper.generateContextState({ chatHistory: history })
    } catch (err) {
      throw invalid(`the chat template cannot render these messages: ${errorMessage(err)}`, 'messages')
    }
    const tokens = state.contextText.tokenize(this.tokenizer.model.tokenizer) as number[]
    const stop: string[] = []
    for (const t of state.stopGenerationTriggers) {
      if (t.values.length > 0 && t.values.every(v => typeof v === 'string')) stop.push(t.values.join(''))
    }
    return { tokens, stop, trimLeading: false }
  }
}
