/**
 * Tokenizer fingerprint: experts are compatible exactly when their BPE vocabulary, merges
 * and special-token ids agree. Names of special/control tokens are NOT hashed (LLaMA-3, 3.1
 * and 3.2 name their reserved special tokens differently but share ids and BPE).
 * Spec: docs/tokenizer.md.
 */
import { createHash } from 'node:crypto'
import { readGgufFileInfo } from 'node-llama-cpp'

export const FINGERPRINT_DOMAIN = 'meshllm-tokenizer-fingerprint-v1'

/** GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte */
const HASHED_BY_TEXT = new Set([1, 2, 6])

export interface TokenizerMetadata {
  model: string
  pre?: string
  tokens: readonly string[]
  tokenType?: readonly number[]
  merges?: readonly string[]
  bosTokenId?: number
}

export function tokenizerFingerprint (t: TokenizerMetadata): Uint8Array {
  const h = createHash('sha256')
  const sep = '\u0000'
  h.update(`${FINGERPRINT_DOMAIN}${sep}${t.model}${sep}${t.pre ?? ''}${sep}${t.tokens.length}${sep}${t.bosTokenId ?? -1}${sep}`)
  // vocabulary: normal tokens by (id, text); special tokens by id only
  const parts: string[] = []
  for (let i = 0; i < t.tokens.length; i++) {
    const type = t.tokenType?.[i] ?? 1
    parts.push(HASHED_BY_TEXT.has(type) ? `${type}:${t.tokens[i]}` : 'S')
    if (parts.length === 8192) { h.update(parts.join(sep)); h.update(sep); parts.length = 0 }
  }
  h.update(parts.join(sep))
  h.update(`${sep}merges${sep}${t.merges?.length ?? 0}${sep}`)
  const merges = t.merges ?? []
  for (let i = 0; i < merges.length; i += 16384) {
    h.update(merges.slice(i, i + 16384).join(sep))
    h.update(sep)
  }
  return new Uint8Array(h.digest())
}

export interface GgufSummary {
  name: string
  architecture: string
  contextLength: number
  vocabSize: number
  quantization: string
  fingerprint: Uint8Array
  bosTokenId?: number
  eosTokenId?: number
}

/** llama.cpp `general.file_type` values → names (the common ones). */
const FILE_TYPES: Record<number, string> = {
  0: 'F32',
  1: 'F16',
  2: 'Q4_0',
  3: 'Q4_1',
  7: 'Q8_0',
  8: 'Q5_0',
  9: 'Q5_1',
  10: 'Q2_K',
  11: 'Q3_K_S',
  12: 'Q3_K_M',
  13: 'Q3_K_L',
  14: 'Q4_K_S',
  15: 'Q4_K_M',
  16: 'Q5_K_S',
  17: 'Q5_K_M',
  18: 'Q6_K',
  19: 'IQ2_XXS',
  20: 'IQ2_XS',
  24: 'IQ1_S',
  25: 'IQ4_NL',
  30: 'IQ4_XS',
  32: 'BF16'
}

/**
 * The GGUF metadata summarizeGguf reads. node-llama-cpp's GgufMetadata is assignable to it; every
 * field is optional here because a file may lack any of them.
 */
interface GgufFields {
  general?: { name?: string, architecture?: string, file_type?: number }
  tokenizer?: {
    ggml?: {
      model: string
      pre?: string
      tokens?: readonly string[]
      token_type?: readonly number[]
      merges?: readonly string[]
      bos_token_id?: number
      eos_token_id?: number
    }
  }
}

/** Reads a GGUF's metadata (no tensors) and computes its tokenizer fingerprint. */
export async function summarizeGguf (path: string): Promise<GgufSummary> {
  const info = await readGgufFileInfo(path, { readTensorInfo: false, logWarnings: false })
  const md: GgufFields = info.metadata
  const tk = md.tokenizer?.ggml
  if (tk?.tokens == null) throw new Error(`${path}: GGUF has no tokenizer.ggml.tokens`)
  const arch: string = md.general?.architecture ?? 'unknown'
  const fileType: number | undefined = md.general?.file_type
  // the architecture's own section ("llama", "qwen2", …), when the file has one
  const archFields = (md as Record<string, { context_length?: unknown } | undefined>)[arch]
  return {
    name: md.general?.name ?? path.split('/').pop() ?? 'model',
    architecture: arch,
    contextLength: Number(archFields?.context_length ?? 0),
    vocabSize: tk.tokens.length,
    quantization: fileType != null ? (FILE_TYPES[fileType] ?? `type${fileType}`) : 'unknown',
    fingerprint: tokenizerFingerprint({
      model: tk.model,
      pre: tk.pre,
      tokens: tk.tokens,
      tokenType: tk.token_type,
      merges: tk.merges,
      bosTokenId: tk.bos_token_id
    }),
    bosTokenId: tk.bos_token_id,
    eosTokenId: tk.eos_token_id
  }
}

export function fingerprintHex (fp: Uint8Array): string {
  return Buffer.from(fp).toString('hex')
}
