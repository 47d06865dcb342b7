/**
 * Keyholder keys: Ed25519. Public keys are written "ed25519:<base64url of the 32 raw bytes>";
 * raw 32-byte, libp2p-protobuf (36-byte) and hex forms are accepted and canonicalised, so a
 * key counts once however it is encoded. Private keys live in keyholder files only: `join`
 * never reads one.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf, publicKeyFromRaw } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { link, readFile, unlink, writeFile } from 'node:fs/promises'
import { GovernanceKeyError } from './errors.js'
import { errorCode, errorMessage } from '../util/errors.js'

export const PUBLIC_KEY_PREFIX = 'ed25519:'

/** canonical raw 32-byte Ed25519 public key from any accepted encoding */
export function canonicalPublicKey (key: Uint8Array | string): Uint8Array {
  let bytes: Uint8Array
  if (typeof key === 'string') {
    const s = key.trim()
    if (s.startsWith(PUBLIC_KEY_PREFIX)) bytes = Buffer.from(s.slice(PUBLIC_KEY_PREFIX.length), 'base64url')
    else if (/^[0-9a-fA-F]{64}$/.test(s)) bytes = Buffer.from(s, 'hex')
    else throw new GovernanceKeyError(`not an Ed25519 public key: "${s.slice(0, 80)}" (expected ed25519:<base64url> or 64 hex digits)`)
  } else {
    bytes = key
  }
  // libp2p protobuf PublicKey { Type: Ed25519 (1), Data: 32 bytes }
  if (bytes.length === 36 && bytes[0] === 0x08 && bytes[1] === 0x01 && bytes[2] === 0x12 && bytes[3] === 0x20) bytes = bytes.subarray(4)
  if (bytes.length !== 32) throw new GovernanceKeyError(`an Ed25519 public key has 32 bytes, got ${bytes.length}`)
  return Uint8Array.from(bytes)
}

export function formatPublicKey (raw: Uint8Array): string {
  return PUBLIC_KEY_PREFIX + Buffer.from(canonicalPublicKey(raw)).toString('base64url')
}

export function keyHex (raw: Uint8Array): string {
  return Buffer.from(raw).toString('hex')
}

export async function verifySignature (publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): Promise<boolean> {
  try {
    if (signature.length !== 64) return false
    return await publicKeyFromRaw(publicKey).verify(data, signature)
  } catch {
    return false
  }
}

export interface KeyholderKey {
  privateKey: PrivateKey
  publicKey: Uint8Array
}

const KEY_FILE_TYPE = 'meshllm-keyholder-key'

export async function generateKeyholderKey (out: string): Promise<KeyholderKey> {
  const privateKey = await generateKeyPair('Ed25519')
  const publicKey = privateKey.publicKey.raw
  const file = {
    type: KEY_FILE_TYPE,
    publicKey: formatPublicKey(publicKey),
    privateKey: Buffer.from(privateKeyToProtobuf(privateKey)).toString('base64'),
    warning: 'keyholder private key: keep offline, never on a mesh node'
  }
  const tmp = `${out}.${process.pid}.tmp`
  await writeFile(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
  // link, not rename: refuses atomically when `out` exists (rename would replace it)
  try {
    await link(tmp, out)
  } catch (err) {
    if (errorCode(err) === 'EEXIST') throw new GovernanceKeyError(`${out} exists: a keyholder key is never replaced (choose another file)`)
    throw err
  } finally {
    await unlink(tmp).catch(() => {})
  }
  return { privateKey, publicKey }
}

export async function loadKeyholderKey (path: string): Promise<KeyholderKey> {
  // parsed JSON: whatever the file holds, its fields unchecked until read
  let json: { type?: unknown, privateKey?: unknown } | null | undefined
  try {
    json = JSON.parse(await readFile(path, 'utf8')) as typeof json
  } catch (err) {
    throw new GovernanceKeyError(`cannot read keyholder key ${path}: ${errorCode(err) === 'ENOENT' ? 'no such file' : errorMessage(err)}`)
  }
  if (json?.type !== KEY_FILE_TYPE || typeof json.privateKey !== 'string') throw new GovernanceKeyError(`${path} is not a meshllm keyholder key file`)
  const privateKey = privateKeyFromProtobuf(Buffer.from(json.privateKey, 'base64'))
  if (privateKey.type !== 'Ed25519') throw new GovernanceKeyError(`${path}: keyholder keys are Ed25519`)
  return { privateKey, publicKey: privateKey.publicKey.raw }
}
