import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface ExpertRecord {
  peerId: Uint8Array<ArrayBuffer>
  protocol: string
  modelName: string
  parameterCount: bigint
  quantization: string
  contextLength: number
  tokenizerFingerprint: Uint8Array<ArrayBuffer>
  tokensPerSecond: number
  freeSlots: number
  maxSlots: number
  seq: bigint
  issuedAtMs: bigint
  expiresAtMs: bigint
  addrs: Uint8Array<ArrayBuffer>[]
}

export namespace ExpertRecord {
  let _codec: Codec<ExpertRecord>

  export const codec = (): Codec<ExpertRecord> => {
    if (_codec == null) {
      _codec = message<ExpertRecord>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.peerId != null && obj.peerId.byteLength > 0)) {
          w.uint32(10)
          w.bytes(obj.peerId)
        }

        if ((obj.protocol != null && obj.protocol !== '')) {
          w.uint32(18)
          w.string(obj.protocol)
        }

        if ((obj.modelName != null && obj.modelName !== '')) {
          w.uint32(26)
          w.string(obj.modelName)
        }

        if ((obj.parameterCount != null && obj.parameterCount !== 0n)) {
          w.uint32(32)
          w.uint64(obj.parameterCount)
        }

        if ((obj.quantization != null && obj.quantization !== '')) {
          w.uint32(42)
          w.string(obj.quantization)
        }

        if ((obj.contextLength != null && obj.contextLength !== 0)) {
          w.uint32(48)
          w.uint32(obj.contextLength)
        }

        if ((obj.tokenizerFingerprint != null && obj.tokenizerFingerprint.byteLength > 0)) {
          w.uint32(58)
          w.bytes(obj.tokenizerFingerprint)
        }

        if ((obj.tokensPerSecond != null && obj.tokensPerSecond !== 0)) {
          w.uint32(69)
          w.float(obj.tokensPerSecond)
        }

        if ((obj.freeSlots != null && obj.freeSlots !== 0)) {
          w.uint32(72)
          w.uint32(obj.freeSlots)
        }

        if ((obj.maxSlots != null && obj.maxSlots !== 0)) {
          w.uint32(80)
          w.uint32(obj.maxSlots)
        }

        if ((obj.seq != null && obj.seq !== 0n)) {
          w.uint32(88)
          w.uint64(obj.seq)
        }

        if ((obj.issuedAtMs != null && obj.issuedAtMs !== 0n)) {
          w.uint32(96)
          w.uint64(obj.issuedAtMs)
        }

        if ((obj.expiresAtMs != null && obj.expiresAtMs !== 0n)) {
          w.uint32(104)
          w.uint64(obj.expiresAtMs)
        }

        if (obj.addrs != null && obj.addrs.length > 0) {
          for (const value of obj.addrs) {
            w.uint32(114)
            w.bytes(value)
          }
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          peerId: uint8ArrayAlloc(0),
          protocol: '',
          modelName: '',
          parameterCount: 0n,
          quantization: '',
          contextLength: 0,
          tokenizerFingerprint: uint8ArrayAlloc(0),
          tokensPerSecond: 0,
          freeSlots: 0,
          maxSlots: 0,
          seq: 0n,
          issuedAtMs: 0n,
          expiresAtMs: 0n,
          addrs: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.peerId = reader.bytes()
              break
            }
            case 2: {
              obj.protocol = reader.string()
              break
            }
            case 3: {
              obj.modelName = reader.string()
              break
            }
            case 4: {
              obj.parameterCount = reader.uint64()
              break
            }
            case 5: {
              obj.quantization = reader.string()
              break
            }
            case 6: {
              obj.contextLength = reader.uint32()
              break
            }
            case 7: {
              obj.tokenizerFingerprint = reader.bytes()
              break
            }
            case 8: {
              obj.tokensPerSecond = reader.float()
              break
            }
            case 9: {
              obj.freeSlots = reader.uint32()
              break
            }
            case 10: {
              obj.maxSlots = reader.uint32()
              break
            }
            case 11: {
              obj.seq = reader.uint64()
              break
            }
            case 12: {
              obj.issuedAtMs = reader.uint64()
              break
            }
            case 13: {
              obj.expiresAtMs = reader.uint64()
              break
            }
            case 14: {
              if (opts.limits?.addrs != null && obj.addrs.length === opts.limits.addrs) {
                throw new MaxLengthError('Decode error - repeated field "addrs" had too many elements')
              }

              obj.addrs.push(reader.bytes())
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
          addrs: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.peerId`,
                value: reader.bytes()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.protocol`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.modelName`,
                value: reader.string()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.parameterCount`,
                value: reader.uint64()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.quantization`,
                value: reader.string()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.contextLength`,
                value: reader.uint32()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.tokenizerFingerprint`,
                value: reader.bytes()
              }
              break
            }
            case 8: {
              yield {
                field: `${prefix}.tokensPerSecond`,
                value: reader.float()
              }
              break
            }
            case 9: {
              yield {
                field: `${prefix}.freeSlots`,
                value: reader.uint32()
              }
              break
            }
            case 10: {
              yield {
                field: `${prefix}.maxSlots`,
                value: reader.uint32()
              }
              break
            }
            case 11: {
              yield {
                field: `${prefix}.seq`,
                value: reader.uint64()
              }
              break
            }
            case 12: {
              yield {
                field: `${prefix}.issuedAtMs`,
                value: reader.uint64()
              }
              break
            }
            case 13: {
              yield {
                field: `${prefix}.expiresAtMs`,
                value: reader.uint64()
              }
              break
            }
            case 14: {
              if (opts.limits?.addrs != null && obj.addrs === opts.limits.addrs) {
                throw new MaxLengthError('Streaming decode error - repeated field "addrs" had too many elements')
              }

              yield {
                field: `${prefix}.addrs[]`,
                index: obj.addrs,
                value: reader.bytes()
              }

              obj.addrs++

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

  export interface ExpertRecordPeerIdFieldEvent {
    field: '$.peerId'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ExpertRecordProtocolFieldEvent {
    field: '$.protocol'
    value: string
  }

  export interface ExpertRecordModelNameFieldEvent {
    field: '$.modelName'
    value: string
  }

  export interface ExpertRecordParameterCountFieldEvent {
    field: '$.parameterCount'
    value: bigint
  }

  export interface ExpertRecordQuantizationFieldEvent {
    field: '$.quantization'
    value: string
  }

  export interface ExpertRecordContextLengthFieldEvent {
    field: '$.contextLength'
    value: number
  }

  export interface ExpertRecordTokenizerFingerprintFieldEvent {
    field: '$.tokenizerFingerprint'
    value: Uint8Array<ArrayBuffer>
  }

  export interface ExpertRecordTokensPerSecondFieldEvent {
    field: '$.tokensPerSecond'
    value: number
  }

  export interface ExpertRecordFreeSlotsFieldEvent {
    field: '$.freeSlots'
    value: number
  }

  export interface ExpertRecordMaxSlotsFieldEvent {
    field: '$.maxSlots'
    value: number
  }

  export interface ExpertRecordSeqFieldEvent {
    field: '$.seq'
    value: bigint
  }

  export interface ExpertRecordIssuedAtMsFieldEvent {
    field: '$.issuedAtMs'
    value: bigint
  }

  export interface ExpertRecordExpiresAtMsFieldEvent {
    field: '$.expiresAtMs'
    value: bigint
  }

  export interface ExpertRecordAddrsFieldEvent {
    field: '$.addrs[]'
    index: number
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<ExpertRecord>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, ExpertRecord.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ExpertRecord>): ExpertRecord {
    return decodeMessage(buf, ExpertRecord.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<ExpertRecord>): Generator<ExpertRecordPeerIdFieldEvent | ExpertRecordProtocolFieldEvent | ExpertRecordModelNameFieldEvent | ExpertRecordParameterCountFieldEvent | ExpertRecordQuantizationFieldEvent | ExpertRecordContextLengthFieldEvent | ExpertRecordTokenizerFingerprintFieldEvent | ExpertRecordTokensPerSecondFieldEvent | ExpertRecordFreeSlotsFieldEvent | ExpertRecordMaxSlotsFieldEvent | ExpertRecordSeqFieldEvent | ExpertRecordIssuedAtMsFieldEvent | ExpertRecordExpiresAtMsFieldEvent | ExpertRecordAddrsFieldEvent> {
    return streamMessage(buf, ExpertRecord.codec(), opts)
  }
}
