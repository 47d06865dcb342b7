/**
 * Makes a real GGUF with a different vocabulary: swaps two adjacent entries of
 * tokenizer.ggml.tokens in place (the array keeps its byte length, so every later offset,
 * tensor data included, is unchanged and the model still loads).
 */
import { readFile, writeFile } from 'node:fs/promises'

export async function writeSwappedVocabGguf (src: string, dst: string, index = 1000): Promise<void> {
  const buf = await readFile(src)
  const key = Buffer.from('tokenizer.ggml.tokens')
  let at = -1
  for (let i = buf.indexOf(key); i >= 0; i = buf.indexOf(key, i + 1)) {
    // the key is preceded by its u64 length
    if (buf.readBigUInt64LE(i - 8) === BigInt(key.length)) { at = i + key.length; break }
  }
  if (at < 0) throw new Error('tokenizer.ggml.tokens not found')
  const valueType = buf.readUInt32LE(at)
  const elemType = buf.readUInt32LE(at + 4)
  if (valueType !== 9 || elemType !== 8) throw new Error('unexpected GGUF types for tokenizer.ggml.tokens')
  const count = Number(buf.readBigUInt64LE(at + 8))
  if (index + 1 >= count) throw new Error('index out of range')
  let p = at + 16
  for (let i = 0; i < index; i++) p += 8 + Number(buf.readBigUInt64LE(p))
  const lenA = Number(buf.readBigUInt64LE(p))
  const a = Buffer.from(buf.subarray(p, p + 8 + lenA))
  const q = p + 8 + lenA
  const lenB = Number(buf.readBigUInt64LE(q))
  const b = Buffer.from(buf.subarray(q, q + 8 + lenB))
  b.copy(buf, p)
  a.copy(buf, p + b.length)
  await writeFile(dst, buf)
}
