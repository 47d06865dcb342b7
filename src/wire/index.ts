/** Wire layer of meshllm: codecs of /meshllm/infer/1.0.0 and the expert record (see protocols/). */
export * from './types.js'
export {
  MalformedMessageError, OversizedMessageError, InvalidFrameError, InvalidRecordError, ExpiredRecordError,
  WIRE_ERROR_NAMES, isWireError
} from './errors.js'
export { encodeFrame, decodeFrame, quantizeLogprob, dequantizeLogprob, dequantizeCompact, type FrameEncoding } from './frame.js'
export {
  encodeRequest, decodeRequest, encodeFrameResponse, encodeOpenResponse, encodeErrorResponse, encodeHaltedResponse,
  decodeFrameResponse, decodeOpenResponse
} from './infer-codec.js'
export {
  type ExpertRecord, ExpertRecordPayload, sealExpertRecord, openExpertRecord, checkExpertRecord,
  expertRecordKey, expertProvidersCid, validateExpertRecordEntry, selectExpertRecord,
  EXPERT_RECORD_DOMAIN, EXPERT_RECORD_CODEC, EXPERT_RECORD_KEY_PREFIX, MAX_RECORD_ADDRS, MAX_CLOCK_SKEW_MS
} from './record.js'
