/**
 * Reads a secret from a file (API token, generate token, TLS key): a regular file of at most
 * 64 KiB; with `checkMode`, refused when group or others may read or write it (like ssh
 * with private keys: a secret other users can read is not a secret, and one they can write
 * is not ours). Every failure is one `Err` naming the flag and the path.
 */
import { readFileSync, statSync } from 'node:fs'
import { errorCode, errorMessage } from './errors.js'

export const MAX_SECRET_FILE = 64 * 1024

export function readSecretFile (path: string, what: string, Err: new (message: string) => Error, checkMode: boolean): Buffer {
  let st
  try {
    st = statSync(path)
  } catch (err) {
    const code = errorCode(err)
    throw new Err(`${what} ${path}: ${code === 'ENOENT' ? 'no such file' : code ?? errorMessage(err)}`)
  }
  if (!st.isFile()) throw new Err(`${what} ${path}: not a regular file`)
  if (st.size > MAX_SECRET_FILE) throw new Err(`${what} ${path}: larger than ${MAX_SECRET_FILE} bytes`)
  if (checkMode && process.platform !== 'win32' && (st.mode & 0o066) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
    throw new Err(`${what} ${path} can be read or written by group/others (mode ${mode}): run chmod 600 ${path}`)
  }
  try {
    return readFileSync(path)
  } catch (err) {
    throw new Err(`${what} ${path}: ${errorCode(err) ?? errorMessage(err)}`)
  }
}
