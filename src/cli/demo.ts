/**
 * `meshllm demo`: a local mesh of the bundled models in separate processes, one generation
 * at K=3 showing which experts served each token, then everything shuts down.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createMeshNode, connectBootstrap } from '../node/node.js'
import { Router } from '../router/router.js'
import { RouterTokenizer } from '../router/tokenizer.js'

type Parse = (args: string[], options: any) => { values: Record<string, any>, positionals: string[] }

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))

export interface SpawnedExpert {
  child: ChildProcess
  addr: string
  model: string
  /** the last 8 KiB the process wrote to stderr */
  stderr: () => string
}

/** Starts `meshllm join` in a child process and resolves with its first listen address. */
export interface SpawnOptions {
  /** environment of the child (added to this process's) */
  env?: NodeJS.ProcessEnv
  /** run without --data-dir (the node then uses its default data directory) */
  defaultDataDir?: boolean
}

export async function spawnExpert (model: string, args: string[] = [], timeoutMs = 120_000, opts: SpawnOptions = {}): Promise<SpawnedExpert> {
  // a fresh data directory unless one is given: spawned experts never share (or leave) state
  // in the user's default directory
  const dataDir = args.includes('--data-dir') || opts.defaultDataDir === true ? [] : ['--data-dir', mkdtempSync(join(tmpdir(), 'meshllm-expert-'))]
  const child = spawn(process.execPath, [BIN, 'join', '--model', model, '--listen', '/ip4/127.0.0.1/tcp/0', '--threads', '1', ...dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env ?? {}) } })
  if (dataDir.length > 0) child.once('exit', () => { rmSync(dataDir[1], { recursive: true, force: true }) })
  let stderr = ''
  child.stderr?.on('data', (d) => { stderr += String(d); if (stderr.length > 8192) stderr = stderr.slice(-8192) })
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`expert ${model} did not start in ${timeoutMs} ms: ${stderr}`)) }, timeoutMs)
    const rl = createInterface({ input: child.stdout! })
    rl.on('line', (line) => {
      const m = /^listening (\S+)/.exec(line)
      if (m != null) { clearTimeout(timer); resolve({ child, addr: m[1], model, stderr: () => stderr }) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`expert ${model} exited with ${code}: ${stderr.trim()}`)) })
  })
}

export async function stopExpert (e: SpawnedExpert): Promise<void> {
  if (e.child.exitCode != null || e.child.signalCode != null) return
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => { e.child.kill('SIGKILL') }, 5_000)
    e.child.once('exit', () => { clearTimeout(t); resolve() })
    e.child.kill('SIGTERM')
  })
}

export async function runDemo (args: string[], parse: Parse): Promise<void> {
  const { values } = parse(args, {
    'max-tokens': { type: 'string' },
    k: { type: 'string', short: 'k' },
    prompt: { type: 'string' },
    seed: { type: 'string' }
  })
  const maxTokens = Number(values['max-tokens'] ?? 48)
  const k = Number(values.k ?? 3)
  const prompt = values.prompt ?? 'The kernel'
  const experts: SpawnedExpert[] = []
  const out = process.stdout
  try {
    out.write('starting 3 experts (meshtest-a, meshtest-b, meshtest-c) as separate processes…\n')
    const first = await spawnExpert('meshtest-a')
    experts.push(first)
    const rest = await Promise.all(['meshtest-b', 'meshtest-c'].map(async m => spawnExpert(m, ['--bootstrap', first.addr])))
    experts.push(...rest)
    for (const e of experts) out.write(`  ${e.model.padEnd(11)} ${e.addr}\n`)
    const node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, experts.map(e => e.addr))
    const tokenizer = await RouterTokenizer.load('meshtest-c')
    const router = new Router(node, tokenizer)
    // wait until the DHT knows all three
    let found = 0
    for (let i = 0; i < 20 && found < experts.length; i++) {
      found = (await router.experts(true)).compatible.length
      if (found < experts.length) await new Promise(resolve => setTimeout(resolve, 300))
    }
    out.write(`router found ${found} expert(s) on the DHT\n\nprompt: ${prompt}\n\n`)
    const names = new Map<string, string>()
    for (const r of (await router.experts()).compatible) names.set(r.peerId.toString(), r.modelName.replace('meshtest-', ''))
    const perToken: string[] = []
    const result = await router.generate(prompt, {
      k,
      maxTokens,
      temperature: 0.7,
      seed: values.seed != null ? Number(values.seed) : undefined,
      onToken: (t) => {
        out.write(t.text)
        perToken.push(t.experts.map(id => names.get(id) ?? id.slice(-4)).sort().join(''))
      }
    })
    out.write('\n\nexperts per token (a/b/c = meshtest-a/b/c):\n')
    out.write(perToken.join(' ') + '\n\n')
    out.write(`${result.tokens} tokens in ${(result.elapsedMs / 1000).toFixed(2)} s = ${result.tokensPerSecond.toFixed(1)} tokens/s at K=${result.effectiveK}; ${result.bytesPerExpertToken.toFixed(0)} bytes per expert per token\n`)
    await tokenizer.close()
    await node.stop()
  } finally {
    await Promise.all(experts.map(stopExpert))
  }
}
