#!/usr/bin/env node
/**
 * Builds native/build/meshllm_native.node, the exact top-k frame helper (docs/frames.md).
 *
 * Compiles native/src/meshllm_native.cc with the system C++ compiler (g++, or $CXX) against
 *   - node-llama-cpp's own addon headers (node_modules/node-llama-cpp/llama/addon), for the
 *     field offsets of its AddonContext / AddonModel;
 *   - llama.h and the ggml headers of the exact llama.cpp release node-llama-cpp ships,
 *     extracted with git from node_modules/node-llama-cpp/llama/gitRelease.bundle;
 *   - napi.h (node-addon-api) and node_api.h (node-api-headers, or Node's own headers).
 * Nothing is linked: llama.cpp symbols are found at runtime in the libllama node-llama-cpp
 * loaded. No network, no node-gyp.
 *
 * Never fails the build: when something is missing it prints one warning line, removes a
 * stale helper, and exits 0; the runtime then uses node-llama-cpp's samplers (the fallback).
 * Up to date (same inputs, see the stamp) it exits at once.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const srcDir = join(root, 'native', 'src')
const src = join(srcDir, 'meshllm_native.cc')
const outDir = join(root, 'native', 'build')
const out = join(outDir, 'meshllm_native.node')
const stampFile = join(outDir, 'meshllm_native.stamp')
const quiet = process.argv.includes('--quiet')
const started = Date.now()

function warn (why) {
  // a stale helper could have been built for other node-llama-cpp headers
  try { rmSync(out, { force: true }); rmSync(stampFile, { force: true }) } catch {}
  process.stdout.write(`build-native: warning: native frame helper not built (${why}); frames use node-llama-cpp's samplers\n`)
  process.exit(0)
}

function run (cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: [opts.input != null ? 'pipe' : 'ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...opts })
}

function packageDir (name, from) {
  const req = createRequire(join(from, 'noop.js'))
  let dir
  try {
    dir = dirname(req.resolve(`${name}/package.json`))
  } catch {
    try {
      dir = dirname(req.resolve(name))
    } catch {
      return undefined
    }
    while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
  }
  return dir
}

try {
  if (process.platform !== 'linux') warn(`platform ${process.platform} is not supported (Linux only)`)
  for (const f of [src, join(srcDir, 'frame.h')]) if (!existsSync(f)) warn(`${f} is missing`)

  const nlc = packageDir('node-llama-cpp', root)
  if (nlc == null) warn('node-llama-cpp is not installed')
  const nlcVersion = JSON.parse(readFileSync(join(nlc, 'package.json'), 'utf8')).version
  const addonDir = join(nlc, 'llama', 'addon')
  const bundle = join(nlc, 'llama', 'gitRelease.bundle')
  for (const f of ['AddonContext.h', 'AddonModel.h']) {
    if (!existsSync(join(addonDir, f))) warn(`node-llama-cpp ${nlcVersion} has no llama/addon/${f}`)
  }
  if (!existsSync(bundle)) warn(`node-llama-cpp ${nlcVersion} has no llama/gitRelease.bundle`)

  const napiDir = packageDir('node-addon-api', nlc)
  if (napiDir == null || !existsSync(join(napiDir, 'napi.h'))) warn('node-addon-api (napi.h) is not installed')
  let nodeApiInclude
  const nah = packageDir('node-api-headers', nlc) ?? packageDir('node-api-headers', root)
  if (nah != null && existsSync(join(nah, 'include', 'node_api.h'))) nodeApiInclude = join(nah, 'include')
  else if (existsSync(join(dirname(process.execPath), '..', 'include', 'node', 'node_api.h'))) nodeApiInclude = join(dirname(process.execPath), '..', 'include', 'node')
  else warn('no node_api.h (node-api-headers or Node\'s include/node)')

  const cxx = process.env.CXX || 'g++'
  let cxxVersion
  try {
    cxxVersion = run(cxx, ['--version']).toString().split('\n')[0]
  } catch {
    warn(`no C++ compiler (${cxx})`)
  }

  let head
  try {
    head = run('git', ['bundle', 'list-heads', bundle]).toString().split('\n').find(l => / HEAD$/.test(l))?.split(' ')[0]
  } catch (err) {
    warn(`git cannot read ${bundle}: ${String(err.stderr ?? err.message).trim().split('\n')[0]}`)
  }
  if (head == null || !/^[0-9a-f]{40}$/.test(head)) warn('the llama.cpp bundle has no HEAD')

  const flags = ['-O3', '-shared', '-fPIC', '-std=c++17', '-fexceptions', '-fvisibility=hidden', '-DNAPI_VERSION=7', '-Wall', '-Wno-unused-function', '-Wno-invalid-offsetof', '-Wno-psabi']
  const hash = createHash('sha256')
  for (const f of readdirSync(srcDir).sort()) hash.update(f).update(readFileSync(join(srcDir, f)))
  for (const f of ['AddonContext.h', 'AddonModel.h', 'AddonSampler.h', 'addonGlobals.h']) {
    if (existsSync(join(addonDir, f))) hash.update(readFileSync(join(addonDir, f)))
  }
  hash.update(readFileSync(join(napiDir, 'napi.h')))
  hash.update(JSON.stringify({ nlcVersion, head, cxx, cxxVersion, flags, nodeApiInclude }))
  const stamp = hash.digest('hex')
  if (existsSync(out) && existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === stamp) {
    if (!quiet) process.stdout.write('build-native: up to date\n')
    process.exit(0)
  }

  // llama.h + ggml headers of the bundled release, cached per commit
  const llamaInc = join(outDir, `llama-${head.slice(0, 12)}`)
  if (!existsSync(join(llamaInc, 'include', 'llama.h'))) {
    const tmp = mkdtempSync(join(tmpdir(), 'meshllm-llama-'))
    try {
      const bare = join(tmp, 'repo.git')
      run('git', ['init', '-q', '--bare', bare])
      run('git', ['-C', bare, 'bundle', 'unbundle', bundle])
      const tar = run('git', ['-C', bare, 'archive', '--format=tar', head, 'include', 'ggml/include', 'LICENSE'])
      const staging = join(tmp, 'headers')
      mkdirSync(staging)
      run('tar', ['-x', '-C', staging], { input: tar })
      if (!existsSync(join(staging, 'include', 'llama.h'))) throw new Error('the bundle has no include/llama.h')
      mkdirSync(outDir, { recursive: true })
      rmSync(llamaInc, { recursive: true, force: true })
      renameSync(staging, llamaInc)
    } catch (err) {
      // a concurrent build may have put them there first
      if (!existsSync(join(llamaInc, 'include', 'llama.h'))) warn(`cannot extract llama.cpp headers from the bundle: ${String(err.stderr ?? err.message).trim().split('\n')[0]}`)
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  }

  mkdirSync(outDir, { recursive: true })
  const tmpOut = `${out}.${process.pid}.tmp`
  const args = [
    ...flags,
    '-I', join(llamaInc, 'include'), '-I', join(llamaInc, 'ggml', 'include'),
    '-I', addonDir, '-I', napiDir, '-I', nodeApiInclude,
    src, '-o', tmpOut, '-ldl'
  ]
  try {
    run(cxx, args)
  } catch (err) {
    rmSync(tmpOut, { force: true })
    const msg = String(err.stderr ?? err.message).split('\n').find(l => /error/.test(l)) ?? String(err.message).split('\n')[0]
    warn(`${cxx} failed: ${msg.trim()}`)
  }
  renameSync(tmpOut, out)
  writeFileSync(stampFile, stamp + '\n')
  if (!quiet) process.stdout.write(`build-native: built ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s (node-llama-cpp ${nlcVersion}, llama.cpp ${head.slice(0, 12)})\n`)
} catch (err) {
  warn(String(err?.message ?? err).split('\n')[0])
}
