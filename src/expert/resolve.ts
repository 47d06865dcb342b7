/**
 * Resolves `--model` to a local GGUF file: a bundled test model name (meshtest-a/b/c), a
 * local .gguf or .gguf.gz path (gzip is decompressed once into the cache), or any
 * node-llama-cpp `resolveModelFile` URI (hf:…, https://…), downloaded with a progress bar.
 */
import { createReadStream, createWriteStream, existsSync } from 'node:fs'
import { mkdir, rename, stat } from 'node:fs/promises'
import { createGunzip } from 'node:zlib'
import { pipeline } from 'node:stream/promises'
import { basename, join, resolve } from 'node:path'
import { homedir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { resolveModelFile } from 'node-llama-cpp'
import { ModelNotFoundError, errorMessage } from '../util/errors.js'

export const BUNDLED_MODELS = ['meshtest-a', 'meshtest-b', 'meshtest-c'] as const

/** the project's models/ folder (compressed bundled models) */
export function bundledModelsDir (): string {
  // dist/src/expert/resolve.js -> <root>/models
  return fileURLToPath(new URL('../../../models/', import.meta.url))
}

export function cacheDir (): string {
  return process.env.MESHLLM_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'meshllm')
}

async function gunzipToCache (gz: string): Promise<string> {
  const dir = join(cacheDir(), 'models')
  await mkdir(dir, { recursive: true })
  const src = await stat(gz)
  const out = join(dir, basename(gz).replace(/\.gz$/, ''))
  // reuse when the cached copy is newer than the archive
  if (existsSync(out) && (await stat(out)).mtimeMs >= src.mtimeMs) return out
  const tmp = `${out}.${process.pid}.${Date.now()}.tmp`
  await pipeline(createReadStream(gz), createGunzip(), createWriteStream(tmp))
  await rename(tmp, out)
  return out
}

export async function resolveModel (spec: string, opts: { progress?: boolean } = {}): Promise<string> {
  if ((BUNDLED_MODELS as readonly string[]).includes(spec)) {
    return gunzipToCache(join(bundledModelsDir(), `${spec}.gguf.gz`))
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(spec) && !spec.startsWith('file:')) {
    try {
      return await resolveModelFile(spec, { directory: join(cacheDir(), 'models'), cli: opts.progress === true })
    } catch (err) {
      throw new ModelNotFoundError(`cannot resolve model "${spec}": ${errorMessage(err)}`)
    }
  }
  const path = resolve(spec.startsWith('file:') ? fileURLToPath(spec) : spec)
  if (!existsSync(path)) throw new ModelNotFoundError(`model file not found: ${path}`)
  if (path.endsWith('.gz')) return gunzipToCache(path)
  return path
}
