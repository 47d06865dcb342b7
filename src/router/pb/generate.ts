import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface GenerateRequest {
  prompt: string
  k: number
  maxTokens: number
  temperature: number
  topK: number
  topP: number
  seed: bigint
  hasSeed: boolean
  stop: string[]
  rule: string
  token?: string
}

export namespace GenerateRequest {
  let _codec: Codec<GenerateRequest>

  export const codec = (): Codec<GenerateRequest> => {
    if (_codec == null) {
      _codec = message<GenerateRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.prompt != null && obj.prompt !== '')) {
          w.uint32(10)
          w.string(obj.prompt)
        }

        if ((obj.k != null && obj.k !== 0)) {
          w.uint32(16)
          w.uint32(obj.k)
        }

        if ((obj.maxTokens != null && obj.maxTokens !== 0)) {
          w.uint32(24)
          w.uint32(obj.maxTokens)
        }

        if ((obj.temperature != null && obj.temperature !== 0)) {
          w.uint32(37)
          w.float(obj.temperature)
        }

        if ((obj.topK != null && obj.topK !== 0)) {
          w.uint32(40)
          w.uint32(obj.topK)
        }

        if ((obj.topP != null && obj.topP !== 0)) {
          w.uint32(53)
          w.float(obj.topP)
        }

        if ((obj.seed != null && obj.seed !== 0n)) {
          w.uint32(56)
          w.uint64(obj.seed)
        }

        if ((obj.hasSeed != null && obj.hasSeed !== false)) {
          w.uint32(80)
          w.bool(obj.hasSeed)
        }

        if (obj.stop != null && obj.stop.length > 0) {
          for (const value of obj.stop) {
            w.uint32(66)
            w.string(value)
          }
        }

        if ((obj.rule != null && obj.rule !== '')) {
          w.uint32(74)
          w.string(obj.rule)
        }

        if (obj.token != null) {
          w.uint32(90)
          w.string(obj.token)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          prompt: '',
          k: 0,
          maxTokens: 0,
          temperature: 0,
          topK: 0,
          topP: 0,
          seed: 0n,
          hasSeed: false,
          stop: [],
          rule: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.prompt = reader.string()
              break
            }
            case 2: {
              obj.k = reader.uint32()
              break
            }
            case 3: {
              obj.maxTokens = reader.uint32()
              break
            }
            case 4: {
              obj.temperature = reader.float()
              break
            }
            case 5: {
              obj.topK = reader.uint32()
              break
            }
            case 6: {
              obj.topP = reader.float()
              break
            }
            case 7: {
              obj.seed = reader.uint64()
              break
            }
            case 10: {
              obj.hasSeed = reader.bool()
              break
            }
            case 8: {
              if (opts.limits?.stop != null && obj.stop.length === opts.limits.stop) {
                throw new MaxLengthError('Decode error - repeated field "stop" had too many elements')
              }

              obj.stop.push(reader.string())
              break
            }
            case 9: {
              obj.rule = reader.string()
              break
            }
            case 11: {
              obj.token = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const obj = {
          stop: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.prompt`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.k`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.maxTokens`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.temperature`,
                value: reader.float()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.topK`,
                value: reader.uint32()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.topP`,
                value: reader.float()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.seed`,
                value: reader.uint64()
              }
              break
            }
            case 10: {
              yield {
                field: `${prefix}.hasSeed`,
                value: reader.bool()
              }
              break
            }
            case 8: {
              if (opts.limits?.stop != null && obj.stop === opts.limits.stop) {
                throw new MaxLengthError('Streaming decode error - repeated field "stop" had too many elements')
              }

              yield {
                field: `${prefix}.stop[]`,
                index: obj.stop,
                value: reader.string()
              }

              obj.stop++

              break
            }
            case 9: {
              yield {
                field: `${prefix}.rule`,
                value: reader.string()
              }
              break
            }
            case 11: {
              yield {
                field: `${prefix}.token`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface GenerateRequestPromptFieldEvent {
    field: '$.prompt'
    value: string
  }

  export interface GenerateRequestKFieldEvent {
    field: '$.k'
    value: number
  }

  export interface GenerateRequestMaxTokensFieldEvent {
    field: '$.maxTokens'
    value: number
  }

  export interface GenerateRequestTemperatureFieldEvent {
    field: '$.temperature'
    value: number
  }

  export interface GenerateRequestTopKFieldEvent {
    field: '$.topK'
    value: number
  }

  export interface GenerateRequestTopPFieldEvent {
    field: '$.topP'
    value: number
  }

  export interface GenerateRequestSeedFieldEvent {
    field: '$.seed'
    value: bigint
  }

  export interface GenerateRequestHasSeedFieldEvent {
    field: '$.hasSeed'
    value: boolean
  }

  export interface GenerateRequestStopFieldEvent {
    field: '$.stop[]'
    index: number
    value: string
  }

  export interface GenerateRequestRuleFieldEvent {
    field: '$.rule'
    value: string
  }

  export interface GenerateRequestTokenFieldEvent {
    field: '$.token'
    value: string
  }

  export function encode (obj: Partial<GenerateRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, GenerateRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<GenerateRequest>): GenerateRequest {
    return decodeMessage(buf, GenerateRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<GenerateRequest>): Generator<GenerateRequestPromptFieldEvent | GenerateRequestKFieldEvent | GenerateRequestMaxTokensFieldEvent | GenerateRequestTemperatureFieldEvent | GenerateRequestTopKFieldEvent | GenerateRequestTopPFieldEvent | GenerateRequestSeedFieldEvent | GenerateRequestHasSeedFieldEvent | GenerateRequestStopFieldEvent | GenerateRequestRuleFieldEvent | GenerateRequestTokenFieldEvent> {
    return streamMessage(buf, GenerateRequest.codec(), opts)
  }
}

export interface TokenEvent {
  id: number
  text: string
  experts: string[]
}

export namespace TokenEvent {
  let _codec: Codec<TokenEvent>

  export const codec = (): Codec<TokenEvent> => {
    if (_codec == null) {
      _codec = message<TokenEvent>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.id != null && obj.id !== 0)) {
          w.uint32(8)
          w.uint32(obj.id)
        }

        if ((obj.text != null && obj.text !== '')) {
          w.uint32(18)
          w.string(obj.text)
        }

        if (obj.experts != null && obj.experts.length > 0) {
          for (const value of obj.experts) {
            w.uint32(26)
            w.string(value)
          }
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          id: 0,
          text: '',
          experts: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.id = reader.uint32()
              break
            }
            case 2: {
              obj.text = reader.string()
              break
            }
            case 3: {
              if (opts.limits?.experts != null && obj.experts.length === opts.limits.experts) {
                throw new MaxLengthError('Decode error - repeated field "experts" had too many elements')
              }

              obj.experts.push(reader.string())
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const obj = {
          experts: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.id`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.text`,
                value: reader.string()
              }
              break
            }
            case 3: {
              if (opts.limits?.experts != null && obj.experts === opts.limits.experts) {
                throw new MaxLengthError('Streaming decode error - repeated field "experts" had too many elements')
              }

              yield {
                field: `${prefix}.experts[]`,
                index: obj.experts,
                value: reader.string()
              }

              obj.experts++

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface TokenEventIdFieldEvent {
    field: '$.id'
    value: number
  }

  export interface TokenEventTextFieldEvent {
    field: '$.text'
    value: string
  }

  export interface TokenEventExpertsFieldEvent {
    field: '$.experts[]'
    index: number
    value: string
  }

  export function encode (obj: Partial<TokenEvent>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, TokenEvent.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<TokenEvent>): TokenEvent {
    return decodeMessage(buf, TokenEvent.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<TokenEvent>): Generator<TokenEventIdFieldEvent | TokenEventTextFieldEvent | TokenEventExpertsFieldEvent> {
    return streamMessage(buf, TokenEvent.codec(), opts)
  }
}

export interface DoneEvent {
  text: string
  tokens: number
  promptTokens: number
  elapsedMs: number
  k: number
  effectiveK: number
  experts: string[]
  bytesPerExpertToken: number
  finishReason: string
  warnings: string[]
  ttftMs: number
}

export namespace DoneEvent {
  let _codec: Codec<DoneEvent>

  export const codec = (): Codec<DoneEvent> => {
    if (_codec == null) {
      _codec = message<DoneEvent>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.text != null && obj.text !== '')) {
          w.uint32(10)
          w.string(obj.text)
        }

        if ((obj.tokens != null && obj.tokens !== 0)) {
          w.uint32(16)
          w.uint32(obj.tokens)
        }

        if ((obj.promptTokens != null && obj.promptTokens !== 0)) {
          w.uint32(24)
          w.uint32(obj.promptTokens)
        }

        if ((obj.elapsedMs != null && obj.elapsedMs !== 0)) {
          w.uint32(33)
          w.double(obj.elapsedMs)
        }

        if ((obj.k != null && obj.k !== 0)) {
          w.uint32(40)
          w.uint32(obj.k)
        }

        if ((obj.effectiveK != null && obj.effectiveK !== 0)) {
          w.uint32(48)
          w.uint32(obj.effectiveK)
        }

        if (obj.experts != null && obj.experts.length > 0) {
          for (const value of obj.experts) {
            w.uint32(58)
            w.string(value)
          }
        }

        if ((obj.bytesPerExpertToken != null && obj.bytesPerExpertToken !== 0)) {
          w.uint32(65)
          w.double(obj.bytesPerExpertToken)
        }

        if ((obj.finishReason != null && obj.finishReason !== '')) {
          w.uint32(74)
          w.string(obj.finishReason)
        }

        if (obj.warnings != null && obj.warnings.length > 0) {
          for (const value of obj.warnings) {
            w.uint32(82)
            w.string(value)
          }
        }

        if ((obj.ttftMs != null && obj.ttftMs !== 0)) {
          w.uint32(89)
          w.double(obj.ttftMs)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          text: '',
          tokens: 0,
          promptTokens: 0,
          elapsedMs: 0,
          k: 0,
          effectiveK: 0,
          experts: [],
          bytesPerExpertToken: 0,
          finishReason: '',
          warnings: [],
          ttftMs: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.text = reader.string()
              break
            }
            case 2: {
              obj.tokens = reader.uint32()
              break
            }
            case 3: {
              obj.promptTokens = reader.uint32()
              break
            }
            case 4: {
              obj.elapsedMs = reader.double()
              break
            }
            case 5: {
              obj.k = reader.uint32()
              break
            }
            case 6: {
              obj.effectiveK = reader.uint32()
              break
            }
            case 7: {
              if (opts.limits?.experts != null && obj.experts.length === opts.limits.experts) {
                throw new MaxLengthError('Decode error - repeated field "experts" had too many elements')
              }

              obj.experts.push(reader.string())
              break
            }
            case 8: {
              obj.bytesPerExpertToken = reader.double()
              break
            }
            case 9: {
              obj.finishReason = reader.string()
              break
            }
            case 10: {
              if (opts.limits?.warnings != null && obj.warnings.length === opts.limits.warnings) {
                throw new MaxLengthError('Decode error - repeated field "warnings" had too many elements')
              }

              obj.warnings.push(reader.string())
              break
            }
            case 11: {
              obj.ttftMs = reader.double()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const obj = {
          experts: 0,
          warnings: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.text`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.tokens`,
                value: reader.uint32()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.promptTokens`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.elapsedMs`,
                value: reader.double()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.k`,
                value: reader.uint32()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.effectiveK`,
                value: reader.uint32()
              }
              break
            }
            case 7: {
              if (opts.limits?.experts != null && obj.experts === opts.limits.experts) {
                throw new MaxLengthError('Streaming decode error - repeated field "experts" had too many elements')
              }

              yield {
                field: `${prefix}.experts[]`,
                index: obj.experts,
                value: reader.string()
              }

              obj.experts++

              break
            }
            case 8: {
              yield {
                field: `${prefix}.bytesPerExpertToken`,
                value: reader.double()
              }
              break
            }
            case 9: {
              yield {
                field: `${prefix}.finishReason`,
                value: reader.string()
              }
              break
            }
            case 10: {
              if (opts.limits?.warnings != null && obj.warnings === opts.limits.warnings) {
                throw new MaxLengthError('Streaming decode error - repeated field "warnings" had too many elements')
              }

              yield {
                field: `${prefix}.warnings[]`,
                index: obj.warnings,
                value: reader.string()
              }

              obj.warnings++

              break
            }
            case 11: {
              yield {
                field: `${prefix}.ttftMs`,
                value: reader.double()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface DoneEventTextFieldEvent {
    field: '$.text'
    value: string
  }

  export interface DoneEventTokensFieldEvent {
    field: '$.tokens'
    value: number
  }

  export interface DoneEventPromptTokensFieldEvent {
    field: '$.promptTokens'
    value: number
  }

  export interface DoneEventElapsedMsFieldEvent {
    field: '$.elapsedMs'
    value: number
  }

  export interface DoneEventKFieldEvent {
    field: '$.k'
    value: number
  }

  export interface DoneEventEffectiveKFieldEvent {
    field: '$.effectiveK'
    value: number
  }

  export interface DoneEventExpertsFieldEvent {
    field: '$.experts[]'
    index: number
    value: string
  }

  export interface DoneEventBytesPerExpertTokenFieldEvent {
    field: '$.bytesPerExpertToken'
    value: number
  }

  export interface DoneEventFinishReasonFieldEvent {
    field: '$.finishReason'
    value: string
  }

  export interface DoneEventWarningsFieldEvent {
    field: '$.warnings[]'
    index: number
    value: string
  }

  export interface DoneEventTtftMsFieldEvent {
    field: '$.ttftMs'
    value: number
  }

  export function encode (obj: Partial<DoneEvent>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, DoneEvent.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<DoneEvent>): DoneEvent {
    return decodeMessage(buf, DoneEvent.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<DoneEvent>): Generator<DoneEventTextFieldEvent | DoneEventTokensFieldEvent | DoneEventPromptTokensFieldEvent | DoneEventElapsedMsFieldEvent | DoneEventKFieldEvent | DoneEventEffectiveKFieldEvent | DoneEventExpertsFieldEvent | DoneEventBytesPerExpertTokenFieldEvent | DoneEventFinishReasonFieldEvent | DoneEventWarningsFieldEvent | DoneEventTtftMsFieldEvent> {
    return streamMessage(buf, DoneEvent.codec(), opts)
  }
}

export interface ErrorEvent {
  name: string
  message: string
}

export namespace ErrorEvent {
  let _codec: Codec<ErrorEvent>

  export const codec = (): Codec<ErrorEvent> => {
    if (_codec == null) {
      _codec = message<ErrorEvent>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.name != null && obj.name !== '')) {
          w.uint32(10)
          w.string(obj.name)
        }

        if ((obj.message != null && obj.message !== '')) {
          w.uint32(18)
          w.string(obj.message)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          name: '',
          message: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.name = reader.string()
              break
            }
            case 2: {
              obj.message = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.name`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.message`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface ErrorEventNameFieldEvent {
    field: '$.name'
    value: string
  }

  export interface ErrorEventMessageFieldEvent {
    field: '$.message'
    value: string
  }

  export function encode (obj: Partial<ErrorEvent>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ErrorEvent.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ErrorEvent>): ErrorEvent {
    return decodeMessage(buf, ErrorEvent.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ErrorEvent>): Generator<ErrorEventNameFieldEvent | ErrorEventMessageFieldEvent> {
    return streamMessage(buf, ErrorEvent.codec(), opts)
  }
}

export interface GenerateEvent {
  token?: TokenEvent
  done?: DoneEvent
  error?: ErrorEvent
}

export namespace GenerateEvent {
  let _codec: Codec<GenerateEvent>

  export const codec = (): Codec<GenerateEvent> => {
    if (_codec == null) {
      _codec = message<GenerateEvent>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.token != null) {
          w.uint32(10)
          TokenEvent.codec().encode(obj.token, w)
        }

        if (obj.done != null) {
          w.uint32(18)
          DoneEvent.codec().encode(obj.done, w)
        }

        if (obj.error != null) {
          w.uint32(26)
          ErrorEvent.codec().encode(obj.error, w)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {}

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.token = TokenEvent.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.token
              })
              break
            }
            case 2: {
              obj.done = DoneEvent.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.done
              })
              break
            }
            case 3: {
              obj.error = ErrorEvent.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.error
              })
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield * TokenEvent.codec().stream(reader, reader.uint32(), `${prefix}.token`, {
                limits: opts.limits?.token
              })

              break
            }
            case 2: {
              yield * DoneEvent.codec().stream(reader, reader.uint32(), `${prefix}.done`, {
                limits: opts.limits?.done
              })

              break
            }
            case 3: {
              yield * ErrorEvent.codec().stream(reader, reader.uint32(), `${prefix}.error`, {
                limits: opts.limits?.error
              })

              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface GenerateEventTokenIdFieldEvent {
    field: '$.token.id'
    value: number
  }

  export interface GenerateEventTokenTextFieldEvent {
    field: '$.token.text'
    value: string
  }

  export interface GenerateEventTokenExpertsFieldEvent {
    field: '$.token.experts[]'
    index: number
    value: string
  }

  export interface GenerateEventDoneTextFieldEvent {
    field: '$.done.text'
    value: string
  }

  export interface GenerateEventDoneTokensFieldEvent {
    field: '$.done.tokens'
    value: number
  }

  export interface GenerateEventDonePromptTokensFieldEvent {
    field: '$.done.promptTokens'
    value: number
  }

  export interface GenerateEventDoneElapsedMsFieldEvent {
    field: '$.done.elapsedMs'
    value: number
  }

  export interface GenerateEventDoneKFieldEvent {
    field: '$.done.k'
    value: number
  }

  export interface GenerateEventDoneEffectiveKFieldEvent {
    field: '$.done.effectiveK'
    value: number
  }

  export interface GenerateEventDoneExpertsFieldEvent {
    field: '$.done.experts[]'
    index: number
    value: string
  }

  export interface GenerateEventDoneBytesPerExpertTokenFieldEvent {
    field: '$.done.bytesPerExpertToken'
    value: number
  }

  export interface GenerateEventDoneFinishReasonFieldEvent {
    field: '$.done.finishReason'
    value: string
  }

  export interface GenerateEventDoneWarningsFieldEvent {
    field: '$.done.warnings[]'
    index: number
    value: string
  }

  export interface GenerateEventDoneTtftMsFieldEvent {
    field: '$.done.ttftMs'
    value: number
  }

  export interface GenerateEventErrorNameFieldEvent {
    field: '$.error.name'
    value: string
  }

  export interface GenerateEventErrorMessageFieldEvent {
    field: '$.error.message'
    value: string
  }

  export function encode (obj: Partial<GenerateEvent>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, GenerateEvent.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<GenerateEvent>): GenerateEvent {
    return decodeMessage(buf, GenerateEvent.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<GenerateEvent>): Generator<GenerateEventTokenIdFieldEvent | GenerateEventTokenTextFieldEvent | GenerateEventTokenExpertsFieldEvent | GenerateEventDoneTextFieldEvent | GenerateEventDoneTokensFieldEvent | GenerateEventDonePromptTokensFieldEvent | GenerateEventDoneElapsedMsFieldEvent | GenerateEventDoneKFieldEvent | GenerateEventDoneEffectiveKFieldEvent | GenerateEventDoneExpertsFieldEvent | GenerateEventDoneBytesPerExpertTokenFieldEvent | GenerateEventDoneFinishReasonFieldEvent | GenerateEventDoneWarningsFieldEvent | GenerateEventDoneTtftMsFieldEvent | GenerateEventErrorNameFieldEvent | GenerateEventErrorMessageFieldEvent> {
    return streamMessage(buf, GenerateEvent.codec(), opts)
  }
}
