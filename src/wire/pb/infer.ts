/* eslint-disable require-yield */

import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface InferRequest {
  open?: Open
  step?: Step
  close?: Close
}

export namespace InferRequest {
  let _codec: Codec<InferRequest>

  export const codec = (): Codec<InferRequest> => {
    if (_codec == null) {
      _codec = message<InferRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.open != null) {
          w.uint32(10)
          Open.codec().encode(obj.open, w)
        }

        if (obj.step != null) {
          w.uint32(18)
          Step.codec().encode(obj.step, w)
        }

        if (obj.close != null) {
          w.uint32(26)
          Close.codec().encode(obj.close, w)
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
              obj.open = Open.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.open
              })
              break
            }
            case 2: {
              obj.step = Step.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.step
              })
              break
            }
            case 3: {
              obj.close = Close.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.close
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
              yield * Open.codec().stream(reader, reader.uint32(), `${prefix}.open`, {
                limits: opts.limits?.open
              })

              break
            }
            case 2: {
              yield * Step.codec().stream(reader, reader.uint32(), `${prefix}.step`, {
                limits: opts.limits?.step
              })

              break
            }
            case 3: {
              yield * Close.codec().stream(reader, reader.uint32(), `${prefix}.close`, {
                limits: opts.limits?.close
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

  export interface InferRequestOpenProtocolVersionFieldEvent {
    field: '$.open.protocolVersion'
    value: number
  }

  export interface InferRequestOpenTokenizerFingerprintFieldEvent {
    field: '$.open.tokenizerFingerprint'
    value: Uint8Array<ArrayBuffer>
  }

  export interface InferRequestOpenTokensFieldEvent {
    field: '$.open.tokens[]'
    index: number
    value: number
  }

  export interface InferRequestOpenTopKFieldEvent {
    field: '$.open.topK'
    value: number
  }

  export interface InferRequestOpenDraftFieldEvent {
    field: '$.open.draft[]'
    index: number
    value: number
  }

  export interface InferRequestOpenTargetFieldEvent {
    field: '$.open.target'
    value: number
  }

  export interface InferRequestOpenScorePromptFieldEvent {
    field: '$.open.scorePrompt'
    value: boolean
  }

  export interface InferRequestOpenCompactFramesFieldEvent {
    field: '$.open.compactFrames'
    value: boolean
  }

  export interface InferRequestStepTokensFieldEvent {
    field: '$.step.tokens[]'
    index: number
    value: number
  }

  export interface InferRequestStepDraftFieldEvent {
    field: '$.step.draft[]'
    index: number
    value: number
  }

  export interface InferRequestStepRollbackFieldEvent {
    field: '$.step.rollback'
    value: number
  }

  export interface InferRequestStepTargetFieldEvent {
    field: '$.step.target'
    value: number
  }

  export function encode (obj: Partial<InferRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, InferRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<InferRequest>): InferRequest {
    return decodeMessage(buf, InferRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<InferRequest>): Generator<InferRequestOpenProtocolVersionFieldEvent | InferRequestOpenTokenizerFingerprintFieldEvent | InferRequestOpenTokensFieldEvent | InferRequestOpenTopKFieldEvent | InferRequestOpenDraftFieldEvent | InferRequestOpenTargetFieldEvent | InferRequestOpenScorePromptFieldEvent | InferRequestOpenCompactFramesFieldEvent | InferRequestStepTokensFieldEvent | InferRequestStepDraftFieldEvent | InferRequestStepRollbackFieldEvent | InferRequestStepTargetFieldEvent> {
    return streamMessage(buf, InferRequest.codec(), opts)
  }
}

export interface Open {
  protocolVersion: number
  tokenizerFingerprint: Uint8Array<ArrayBuffer>
  tokens: number[]
  topK: number
  draft: number[]
  target?: number
  scorePrompt: boolean
  compactFrames: boolean
}

export namespace Open {
  let _codec: Codec<Open>

  export const codec = (): Codec<Open> => {
    if (_codec == null) {
      _codec = message<Open>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.protocolVersion != null && obj.protocolVersion !== 0)) {
          w.uint32(8)
          w.uint32(obj.protocolVersion)
        }

        if ((obj.tokenizerFingerprint != null && obj.tokenizerFingerprint.byteLength > 0)) {
          w.uint32(18)
          w.bytes(obj.tokenizerFingerprint)
        }

        if (obj.tokens != null && obj.tokens.length > 0) {
          for (const value of obj.tokens) {
            w.uint32(24)
            w.uint32(value)
          }
        }

        if ((obj.topK != null && obj.topK !== 0)) {
          w.uint32(32)
          w.uint32(obj.topK)
        }

        if (obj.draft != null && obj.draft.length > 0) {
          for (const value of obj.draft) {
            w.uint32(40)
            w.uint32(value)
          }
        }

        if (obj.target != null) {
          w.uint32(48)
          w.uint32(obj.target)
        }

        if ((obj.scorePrompt != null && obj.scorePrompt !== false)) {
          w.uint32(56)
          w.bool(obj.scorePrompt)
        }

        if ((obj.compactFrames != null && obj.compactFrames !== false)) {
          w.uint32(64)
          w.bool(obj.compactFrames)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          protocolVersion: 0,
          tokenizerFingerprint: uint8ArrayAlloc(0),
          tokens: [],
          topK: 0,
          draft: [],
          scorePrompt: false,
          compactFrames: false
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.protocolVersion = reader.uint32()
              break
            }
            case 2: {
              obj.tokenizerFingerprint = reader.bytes()
              break
            }
            case 3: {
              if (opts.limits?.tokens != null && obj.tokens.length === opts.limits.tokens) {
                throw new MaxLengthError('Decode error - repeated field "tokens" had too many elements')
              }

              obj.tokens.push(reader.uint32())
              break
            }
            case 4: {
              obj.topK = reader.uint32()
              break
            }
            case 5: {
              if (opts.limits?.draft != null && obj.draft.length === opts.limits.draft) {
                throw new MaxLengthError('Decode error - repeated field "draft" had too many elements')
              }

              obj.draft.push(reader.uint32())
              break
            }
            case 6: {
              obj.target = reader.uint32()
              break
            }
            case 7: {
              obj.scorePrompt = reader.bool()
              break
            }
            case 8: {
              obj.compactFrames = reader.bool()
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
          tokens: 0,
          draft: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.protocolVersion`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.tokenizerFingerprint`,
                value: reader.bytes()
              }
              break
            }
            case 3: {
              if (opts.limits?.tokens != null && obj.tokens === opts.limits.tokens) {
                throw new MaxLengthError('Streaming decode error - repeated field "tokens" had too many elements')
              }

              yield {
                field: `${prefix}.tokens[]`,
                index: obj.tokens,
                value: reader.uint32()
              }

              obj.tokens++

              break
            }
            case 4: {
              yield {
                field: `${prefix}.topK`,
                value: reader.uint32()
              }
              break
            }
            case 5: {
              if (opts.limits?.draft != null && obj.draft === opts.limits.draft) {
                throw new MaxLengthError('Streaming decode error - repeated field "draft" had too many elements')
              }

              yield {
                field: `${prefix}.draft[]`,
                index: obj.draft,
                value: reader.uint32()
              }

              obj.draft++

              break
            }
            case 6: {
              yield {
                field: `${prefix}.target`,
                value: reader.uint32()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.scorePrompt`,
                value: reader.bool()
              }
              break
            }
            case 8: {
              yield {
                field: `${prefix}.compactFrames`,
                value: reader.bool()
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

  export interface OpenProtocolVersionFieldEvent {
    field: '$.protocolVersion'
    value: number
  }

  export interface OpenTokenizerFingerprintFieldEvent {
    field: '$.tokenizerFingerprint'
    value: Uint8Array<ArrayBuffer>
  }

  export interface OpenTokensFieldEvent {
    field: '$.tokens[]'
    index: number
    value: number
  }

  export interface OpenTopKFieldEvent {
    field: '$.topK'
    value: number
  }

  export interface OpenDraftFieldEvent {
    field: '$.draft[]'
    index: number
    value: number
  }

  export interface OpenTargetFieldEvent {
    field: '$.target'
    value: number
  }

  export interface OpenScorePromptFieldEvent {
    field: '$.scorePrompt'
    value: boolean
  }

  export interface OpenCompactFramesFieldEvent {
    field: '$.compactFrames'
    value: boolean
  }

  export function encode (obj: Partial<Open>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Open.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Open>): Open {
    return decodeMessage(buf, Open.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Open>): Generator<OpenProtocolVersionFieldEvent | OpenTokenizerFingerprintFieldEvent | OpenTokensFieldEvent | OpenTopKFieldEvent | OpenDraftFieldEvent | OpenTargetFieldEvent | OpenScorePromptFieldEvent | OpenCompactFramesFieldEvent> {
    return streamMessage(buf, Open.codec(), opts)
  }
}

export interface Step {
  tokens: number[]
  draft: number[]
  rollback: number
  target?: number
}

export namespace Step {
  let _codec: Codec<Step>

  export const codec = (): Codec<Step> => {
    if (_codec == null) {
      _codec = message<Step>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.tokens != null && obj.tokens.length > 0) {
          for (const value of obj.tokens) {
            w.uint32(8)
            w.uint32(value)
          }
        }

        if (obj.draft != null && obj.draft.length > 0) {
          for (const value of obj.draft) {
            w.uint32(16)
            w.uint32(value)
          }
        }

        if ((obj.rollback != null && obj.rollback !== 0)) {
          w.uint32(24)
          w.uint32(obj.rollback)
        }

        if (obj.target != null) {
          w.uint32(32)
          w.uint32(obj.target)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          tokens: [],
          draft: [],
          rollback: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.tokens != null && obj.tokens.length === opts.limits.tokens) {
                throw new MaxLengthError('Decode error - repeated field "tokens" had too many elements')
              }

              obj.tokens.push(reader.uint32())
              break
            }
            case 2: {
              if (opts.limits?.draft != null && obj.draft.length === opts.limits.draft) {
                throw new MaxLengthError('Decode error - repeated field "draft" had too many elements')
              }

              obj.draft.push(reader.uint32())
              break
            }
            case 3: {
              obj.rollback = reader.uint32()
              break
            }
            case 4: {
              obj.target = reader.uint32()
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
          tokens: 0,
          draft: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.tokens != null && obj.tokens === opts.limits.tokens) {
                throw new MaxLengthError('Streaming decode error - repeated field "tokens" had too many elements')
              }

              yield {
                field: `${prefix}.tokens[]`,
                index: obj.tokens,
                value: reader.uint32()
              }

              obj.tokens++

              break
            }
            case 2: {
              if (opts.limits?.draft != null && obj.draft === opts.limits.draft) {
                throw new MaxLengthError('Streaming decode error - repeated field "draft" had too many elements')
              }

              yield {
                field: `${prefix}.draft[]`,
                index: obj.draft,
                value: reader.uint32()
              }

              obj.draft++

              break
            }
            case 3: {
              yield {
                field: `${prefix}.rollback`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.target`,
                value: reader.uint32()
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

  export interface StepTokensFieldEvent {
    field: '$.tokens[]'
    index: number
    value: number
  }

  export interface StepDraftFieldEvent {
    field: '$.draft[]'
    index: number
    value: number
  }

  export interface StepRollbackFieldEvent {
    field: '$.rollback'
    value: number
  }

  export interface StepTargetFieldEvent {
    field: '$.target'
    value: number
  }

  export function encode (obj: Partial<Step>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Step.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Step>): Step {
    return decodeMessage(buf, Step.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Step>): Generator<StepTokensFieldEvent | StepDraftFieldEvent | StepRollbackFieldEvent | StepTargetFieldEvent> {
    return streamMessage(buf, Step.codec(), opts)
  }
}

export interface Close {}

export namespace Close {
  let _codec: Codec<Close>

  export const codec = (): Codec<Close> => {
    if (_codec == null) {
      _codec = message<Close>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
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

  export function encode (obj: Partial<Close>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Close.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Close>): Close {
    return decodeMessage(buf, Close.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Close>): Generator<{}> {
    return streamMessage(buf, Close.codec(), opts)
  }
}

export interface Frame {
  position: number
  ids: Uint8Array<ArrayBuffer>
  logprobs: Uint8Array<ArrayBuffer>
  tailMass: number
  targetLogprob?: number
  logprobsU8: Uint8Array<ArrayBuffer>
  logprobFloor: number
}

export namespace Frame {
  let _codec: Codec<Frame>

  export const codec = (): Codec<Frame> => {
    if (_codec == null) {
      _codec = message<Frame>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.position != null && obj.position !== 0)) {
          w.uint32(8)
          w.uint32(obj.position)
        }

        if ((obj.ids != null && obj.ids.byteLength > 0)) {
          w.uint32(18)
          w.bytes(obj.ids)
        }

        if ((obj.logprobs != null && obj.logprobs.byteLength > 0)) {
          w.uint32(26)
          w.bytes(obj.logprobs)
        }

        if ((obj.tailMass != null && obj.tailMass !== 0)) {
          w.uint32(37)
          w.float(obj.tailMass)
        }

        if (obj.targetLogprob != null) {
          w.uint32(45)
          w.float(obj.targetLogprob)
        }

        if ((obj.logprobsU8 != null && obj.logprobsU8.byteLength > 0)) {
          w.uint32(50)
          w.bytes(obj.logprobsU8)
        }

        if ((obj.logprobFloor != null && obj.logprobFloor !== 0)) {
          w.uint32(56)
          w.uint32(obj.logprobFloor)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          position: 0,
          ids: uint8ArrayAlloc(0),
          logprobs: uint8ArrayAlloc(0),
          tailMass: 0,
          logprobsU8: uint8ArrayAlloc(0),
          logprobFloor: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.position = reader.uint32()
              break
            }
            case 2: {
              obj.ids = reader.bytes()
              break
            }
            case 3: {
              obj.logprobs = reader.bytes()
              break
            }
            case 4: {
              obj.tailMass = reader.float()
              break
            }
            case 5: {
              obj.targetLogprob = reader.float()
              break
            }
            case 6: {
              obj.logprobsU8 = reader.bytes()
              break
            }
            case 7: {
              obj.logprobFloor = reader.uint32()
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
                field: `${prefix}.position`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.ids`,
                value: reader.bytes()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.logprobs`,
                value: reader.bytes()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.tailMass`,
                value: reader.float()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.targetLogprob`,
                value: reader.float()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.logprobsU8`,
                value: reader.bytes()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.logprobFloor`,
                value: reader.uint32()
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

  export interface FramePositionFieldEvent {
    field: '$.position'
    value: number
  }

  export interface FrameIdsFieldEvent {
    field: '$.ids'
    value: Uint8Array<ArrayBuffer>
  }

  export interface FrameLogprobsFieldEvent {
    field: '$.logprobs'
    value: Uint8Array<ArrayBuffer>
  }

  export interface FrameTailMassFieldEvent {
    field: '$.tailMass'
    value: number
  }

  export interface FrameTargetLogprobFieldEvent {
    field: '$.targetLogprob'
    value: number
  }

  export interface FrameLogprobsU8FieldEvent {
    field: '$.logprobsU8'
    value: Uint8Array<ArrayBuffer>
  }

  export interface FrameLogprobFloorFieldEvent {
    field: '$.logprobFloor'
    value: number
  }

  export function encode (obj: Partial<Frame>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Frame.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Frame>): Frame {
    return decodeMessage(buf, Frame.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Frame>): Generator<FramePositionFieldEvent | FrameIdsFieldEvent | FrameLogprobsFieldEvent | FrameTailMassFieldEvent | FrameTargetLogprobFieldEvent | FrameLogprobsU8FieldEvent | FrameLogprobFloorFieldEvent> {
    return streamMessage(buf, Frame.codec(), opts)
  }
}

export interface OpenInfo {
  frame?: Frame
  modelName: string
  contextLength: number
  freeSlots: number
  promptLogprob?: number
  promptScored?: number
}

export namespace OpenInfo {
  let _codec: Codec<OpenInfo>

  export const codec = (): Codec<OpenInfo> => {
    if (_codec == null) {
      _codec = message<OpenInfo>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.frame != null) {
          w.uint32(10)
          Frame.codec().encode(obj.frame, w)
        }

        if ((obj.modelName != null && obj.modelName !== '')) {
          w.uint32(18)
          w.string(obj.modelName)
        }

        if ((obj.contextLength != null && obj.contextLength !== 0)) {
          w.uint32(24)
          w.uint32(obj.contextLength)
        }

        if ((obj.freeSlots != null && obj.freeSlots !== 0)) {
          w.uint32(32)
          w.uint32(obj.freeSlots)
        }

        if (obj.promptLogprob != null) {
          w.uint32(41)
          w.double(obj.promptLogprob)
        }

        if (obj.promptScored != null) {
          w.uint32(48)
          w.uint32(obj.promptScored)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          modelName: '',
          contextLength: 0,
          freeSlots: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.frame = Frame.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.frame
              })
              break
            }
            case 2: {
              obj.modelName = reader.string()
              break
            }
            case 3: {
              obj.contextLength = reader.uint32()
              break
            }
            case 4: {
              obj.freeSlots = reader.uint32()
              break
            }
            case 5: {
              obj.promptLogprob = reader.double()
              break
            }
            case 6: {
              obj.promptScored = reader.uint32()
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
              yield * Frame.codec().stream(reader, reader.uint32(), `${prefix}.frame`, {
                limits: opts.limits?.frame
              })

              break
            }
            case 2: {
              yield {
                field: `${prefix}.modelName`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.contextLength`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.freeSlots`,
                value: reader.uint32()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.promptLogprob`,
                value: reader.double()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.promptScored`,
                value: reader.uint32()
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

  export interface OpenInfoFramePositionFieldEvent {
    field: '$.frame.position'
    value: number
  }

  export interface OpenInfoFrameIdsFieldEvent {
    field: '$.frame.ids'
    value: Uint8Array<ArrayBuffer>
  }

  export interface OpenInfoFrameLogprobsFieldEvent {
    field: '$.frame.logprobs'
    value: Uint8Array<ArrayBuffer>
  }

  export interface OpenInfoFrameTailMassFieldEvent {
    field: '$.frame.tailMass'
    value: number
  }

  export interface OpenInfoFrameTargetLogprobFieldEvent {
    field: '$.frame.targetLogprob'
    value: number
  }

  export interface OpenInfoFrameLogprobsU8FieldEvent {
    field: '$.frame.logprobsU8'
    value: Uint8Array<ArrayBuffer>
  }

  export interface OpenInfoFrameLogprobFloorFieldEvent {
    field: '$.frame.logprobFloor'
    value: number
  }

  export interface OpenInfoModelNameFieldEvent {
    field: '$.modelName'
    value: string
  }

  export interface OpenInfoContextLengthFieldEvent {
    field: '$.contextLength'
    value: number
  }

  export interface OpenInfoFreeSlotsFieldEvent {
    field: '$.freeSlots'
    value: number
  }

  export interface OpenInfoPromptLogprobFieldEvent {
    field: '$.promptLogprob'
    value: number
  }

  export interface OpenInfoPromptScoredFieldEvent {
    field: '$.promptScored'
    value: number
  }

  export function encode (obj: Partial<OpenInfo>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, OpenInfo.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<OpenInfo>): OpenInfo {
    return decodeMessage(buf, OpenInfo.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<OpenInfo>): Generator<OpenInfoFramePositionFieldEvent | OpenInfoFrameIdsFieldEvent | OpenInfoFrameLogprobsFieldEvent | OpenInfoFrameTailMassFieldEvent | OpenInfoFrameTargetLogprobFieldEvent | OpenInfoFrameLogprobsU8FieldEvent | OpenInfoFrameLogprobFloorFieldEvent | OpenInfoModelNameFieldEvent | OpenInfoContextLengthFieldEvent | OpenInfoFreeSlotsFieldEvent | OpenInfoPromptLogprobFieldEvent | OpenInfoPromptScoredFieldEvent> {
    return streamMessage(buf, OpenInfo.codec(), opts)
  }
}
