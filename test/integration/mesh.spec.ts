/**
 * End to end on loopback TCP: four expert processes (meshtest-a, -b, -c and a second -c),
 * an in-process router that finds them through the DHT, real frames, real aggregation.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { getLlama, LlamaLogLevel } from 'node-llama-cpp'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { ExpertSession } from '../../src/router/expert-client.js'
import { RecordCache } from '../../src/router/record-cache.js'
import { openExpertRecord, sealExpertRecord } from '../../src/wire/record.js'
import { resolveModel } from '../../src/expert/resolve.js'
import { writeSwappedVocabGguf } from '../helpers/gguf-patch.js'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))

function cli (args: string[], timeoutMs = 60_000): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs }, (err: any, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

function peerOf (addr: string): string {
  return addr.split('/p2p/')[1]
}

describe('mesh on loopback (4 expert processes)', function () {
  this.timeout(180_000)
  const experts: SpawnedExpert[] = []
  let node: MeshNode
  let tokenizer: RouterTokenizer
  let router: Router
  let byModel: Record<string, string>

  before(async () => {
    const a = await spawnExpert('meshtest-a', ['--max-sessions', '6'])
    experts.push(a)
    experts.push(...await Promise.all([
      spawnExpert('meshtest-b', ['--bootstrap', a.addr, '--max-sessions', '6']),
      spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--max-sessions', '6']),
      spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--max-sessions', '6'])
    ]))
    byModel = { a: peerOf(experts[0].addr), b: peerOf(experts[1].addr), c: peerOf(experts[2].addr), c2: peerOf(experts[3].addr) }
    node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    // bootstrap through one expert only: the rest must come from the DHT
    await connectBootstrap(node, [a.addr])
    tokenizer = await RouterTokenizer.load('meshtest-c')
    router = new Router(node, tokenizer)
    for (let i = 0; i < 40; i++) {
      if ((await router.experts(true)).compatible.length >= 4) break
      await new Promise(resolve => setTimeout(resolve, 250))
    }
  })

  after(async () => {
    await tokenizer?.close()
    await node?.stop()
    await Promise.all(experts.map(stopExpert))
  })

  it('finds all four experts through the DHT with verified records', async () => {
    const { compatible } = await router.experts(true)
    assert.deepEqual(compatible.map(r => r.peerId.toString()).sort(), Object.values(byModel).sort())
    const a = compatible.find(r => r.peerId.toString() === byModel.a)!
    assert.equal(a.modelName, 'meshtest-a')
    assert.equal(a.contextLength, 512)
    assert.equal(a.quantization, 'Q8_0')
    assert.ok(a.tokensPerSecond > 0)
    assert.ok(a.parameterCount > 5e6 && a.parameterCount < 5e7, `parameters ${a.parameterCount}`)
  })

  for (const k of [1, 2, 3]) {
    it(`generates 64 tokens at K=${k}, every step from K distinct experts, frames under 2 KB`, async () => {
      const r = await router.generate('The kernel', { k, maxTokens: 64, temperature: 0.8, seed: 7, ignoreEos: true })
      assert.equal(r.tokens, 64)
      assert.equal(r.steps.length, 64)
      for (const s of r.steps) {
        assert.equal(s.experts.length, k)
        assert.equal(new Set(s.experts).size, k)
      }
      assert.ok(r.bytesPerExpertToken > 0 && r.bytesPerExpertToken < 2000, `bytes per expert per token ${r.bytesPerExpertToken}`)
      assert.ok(r.text.length > 0)
      if (k >= 2) assert.ok(r.experts.length > k, 'per-token reselection spreads over more than K experts')
    })
  }

  it('greedy K=1 on meshtest-a reproduces node-llama-cpp generating alone', async () => {
    const prompt = 'Python is'
    const r = await router.generate(prompt, { k: 1, maxTokens: 48, temperature: 0, experts: [byModel.a], ignoreEos: true })
    const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: 'never' })
    const model = await llama.loadModel({ modelPath: await resolveModel('meshtest-a') })
    const ctx = await model.createContext({ contextSize: 512, threads: 1 })
    const seq = ctx.getSequence()
    const ref: number[] = []
    const input = [model.tokens.bos!, ...model.tokenize(prompt)]
    for await (const t of seq.evaluate(input, { temperature: 0, yieldEogToken: true })) {
      ref.push(t)
      if (ref.length >= 48) break
    }
    const expected = model.detokenize(ref as any)
    await ctx.dispose()
    await model.dispose()
    assert.equal(r.text, expected)
  })

  it('runs with fewer experts than K and says so', async () => {
    const r = await router.generate('git', { k: 6, maxTokens: 8, ignoreEos: true, experts: [byModel.a, byModel.b] })
    assert.equal(r.effectiveK, 2)
    assert.equal(r.tokens, 8)
    assert.ok(r.warnings.some(w => w.includes('K=2')))
  })

  it('an expert refuses a session whose tokenizer fingerprint differs (INCOMPATIBLE)', async () => {
    const s = await ExpertSession.connect(node, peerIdFromString(byModel.b), { signal: AbortSignal.timeout(5_000) })
    await assert.rejects(s.open(Uint32Array.from([128000, 791]), new Uint8Array(32).fill(7), { signal: AbortSignal.timeout(5_000) }), (e: any) => e.name === 'ExpertError' && /INCOMPATIBLE/.test(e.message))
    await s.close()
  })

  it('refuses an expert with a different vocabulary, with a clear message', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshllm-bad-'))
    const bad = join(dir, 'meshtest-c-swapped.gguf')
    await writeSwappedVocabGguf(await resolveModel('meshtest-c'), bad)
    const e = await spawnExpert(bad, ['--bootstrap', experts[0].addr])
    try {
      const badId = peerOf(e.addr)
      let inc: string[] = []
      for (let i = 0; i < 40 && !inc.includes(badId); i++) {
        inc = (await router.experts(true)).incompatible.map(r => r.peerId.toString())
        if (!inc.includes(badId)) await new Promise(resolve => setTimeout(resolve, 250))
      }
      assert.ok(inc.includes(badId), 'the incompatible expert is seen')
      const { compatible } = await router.experts()
      assert.ok(!compatible.some(r => r.peerId.toString() === badId), 'and never counted as compatible')
      await assert.rejects(router.generate('x', { experts: [badId], maxTokens: 2 }), (err: any) => err.name === 'IncompatibleTokenizerError' && /tokenizer/.test(err.message))
      const r = await router.generate('The', { k: 3, maxTokens: 16, ignoreEos: true })
      assert.ok(!r.experts.includes(badId))
    } finally {
      await stopExpert(e)
    }
  })

  it('meshllm generate --via asks a mesh peer to route, with its own expert among the 4 (in process)', async () => {
    const r = await cli(['generate', 'The kernel', '--via', experts[1].addr, '-k', '4', '--max-tokens', '12', '--seed', '3', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.ok(out.tokens > 0 && out.tokens <= 12)
    assert.equal(out.k, 4)
    // 4 experts in the mesh: the routing peer reaches K = 4 only with its own
    assert.equal(out.effectiveK, 4)
    assert.ok(out.experts.includes(experts[1].addr.split('/p2p/')[1]), 'the routing peer\'s own expert served')
    assert.ok(out.bytesPerExpertToken > 0 && out.bytesPerExpertToken < 2000)
    // the client's own time to first token: its dial and the routing peer's work included
    assert.ok(out.ttftMs > 0 && out.ttftMs <= out.elapsedMs, `ttftMs ${out.ttftMs} of ${out.elapsedMs}`)
  })

  it('meshllm generate --bootstrap prints the documented JSON (and leaves the experts it found in its --record-cache)', async () => {
    const cacheFile = join(await mkdtemp(join(tmpdir(), 'meshllm-cache-')), 'records.json')
    const r = await cli(['generate', 'Perl', '--bootstrap', experts[2].addr, '-k', '2', '--max-tokens', '8', '--record-cache', cacheFile, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    for (const f of ['text', 'tokens', 'elapsedMs', 'ttftMs', 'tokensPerSecond', 'k', 'experts', 'bytesPerExpertToken']) assert.ok(f in out, f)
    assert.ok(out.ttftMs > 0 && out.ttftMs <= out.elapsedMs, `ttftMs ${out.ttftMs} of ${out.elapsedMs}`)
    const meshes = JSON.parse(await readFile(cacheFile, 'utf8')).meshes
    const saved = Object.values(meshes) as Array<{ records: string[] }>
    assert.equal(saved.length, 1, 'one mesh: the one named by this bootstrap and governance')
    assert.ok(saved[0].records.length >= 2, `${saved[0].records.length} records saved`)
  })

  it('a stale sample that covers what the caller needs is refreshed in the background, one that does not before answering', async () => {
    const r = new Router(node, tokenizer, { discoveryTtlMs: 1 })
    assert.ok((await r.experts(true)).compatible.length >= 4)
    await new Promise(resolve => setTimeout(resolve, 5))
    // stale; a generation of K = 4 has its 4: answered at once, the refresh still under way
    assert.ok((await r.experts(false, undefined, undefined, 4)).compatible.length >= 4)
    const inFlight = (r as unknown as { discovering?: Promise<boolean> }).discovering
    assert.ok(inFlight != null, 'the refresh runs in the background')
    await inFlight
    await new Promise(resolve => setTimeout(resolve, 5))
    // stale and short of the 5 asked for: the answer waits for the refresh
    await r.experts(false, undefined, undefined, 5)
    assert.equal((r as unknown as { discovering?: Promise<boolean> }).discovering, undefined, 'the refresh ran before the answer')
  })

  it('a router with no bootstrap at all generates from the experts a record cache holds; a cached expert that is gone is skipped', async () => {
    const file = join(await mkdtemp(join(tmpdir(), 'meshllm-cache-')), 'records.json')
    const first = new Router(node, tokenizer, { recordCache: new RecordCache(file, { mesh: 'm' }) })
    assert.ok((await first.experts(true)).compatible.length >= 4)
    await first.saveRecordCache()
    // and an expert that no longer runs: a record it signed, for an address nobody listens on
    const gone = await generateKeyPair('Ed25519')
    const now = Date.now()
    const goneRecord = await openExpertRecord(await sealExpertRecord({ ...(await first.experts()).compatible[0], peerId: peerIdFromPrivateKey(gone), seq: now, issuedAtMs: now, expiresAtMs: now + 600_000, addrs: [multiaddr('/ip4/127.0.0.1/tcp/9')] }, gone))
    const cached = new RecordCache(file, { mesh: 'm' })
    await cached.save([...(await cached.load()).records, goneRecord])
    const lonely = async (cache: RecordCache): Promise<{ router: Router, node: MeshNode }> => {
      const n = await createMeshNode({ listen: [], dhtServer: false })
      await n.start()
      return { node: n, router: new Router(n, tokenizer, { recordCache: cache, discoveryTimeoutMs: 1_000 }) }
    }
    const a = await lonely(new RecordCache(file, { mesh: 'm' }))
    const b = await lonely(new RecordCache(file, { mesh: 'another mesh' }))
    try {
      const r = await a.router.generate('The kernel', { k: 4, maxTokens: 4, temperature: 0, ignoreEos: true })
      assert.equal(r.tokens, 4)
      assert.equal(r.effectiveK, 4)
      assert.ok(r.experts.every(id => Object.values(byModel).includes(id)), 'only the live experts served')
      assert.ok(!r.experts.includes(goneRecord.peerId.toString()))
      // the control: the same lonely router without this mesh's records finds nobody
      await assert.rejects(b.router.generate('The kernel', { k: 1, maxTokens: 1 }), { name: 'NoExpertsError' })
    } finally {
      await a.node.stop()
      await b.node.stop()
    }
  })

  it('CLI errors: a prompt past the context is one line and exit code 5', async () => {
    const r = await cli(['generate', 'kernel '.repeat(600), '--bootstrap', experts[0].addr, '--max-tokens', '4'])
    assert.equal(r.code, 5)
    assert.match(r.stderr, /^meshllm: prompt of \d+ tokens is longer than the experts' context/)
    assert.equal(r.stderr.trim().split('\n').length, 1)
  })

  it('meshllm status lists the experts with model and speed', async () => {
    const r = await cli(['status', '--bootstrap', experts[0].addr, '--json'])
    assert.equal(r.code, 0, `stderr: ${r.stderr}\nstdout: ${r.stdout}`)
    const out = JSON.parse(r.stdout)
    const ids = out.experts.map((e: any) => e.peerId)
    for (const id of Object.values(byModel)) assert.ok(ids.includes(id))
    assert.ok(out.experts.every((e: any) => e.tokensPerSecond > 0 && typeof e.model === 'string'))
  })

  // last: it kills an expert
  it('an expert SIGKILLed mid-generation does not stop the generation', async () => {
    const victim = experts[3]
    const victimId = peerOf(victim.addr)
    let killedAt = -1
    const r = await router.generate('The kernel', {
      k: 3,
      maxTokens: 64,
      temperature: 0.8,
      seed: 11,
      ignoreEos: true,
      policy: 'random',
      onToken: (t) => {
        if (killedAt < 0 && t.index >= 10 && t.experts.includes(victimId)) {
          killedAt = t.index
          victim.child.kill('SIGKILL')
        }
      }
    })
    assert.ok(killedAt >= 0, 'the victim served a step and was killed')
    assert.equal(r.tokens, 64)
    // after the kill (allowing the one step in flight), the victim never counts again
    for (const s of r.steps.slice(killedAt + 2)) assert.ok(!s.experts.includes(victimId))
    assert.ok(r.steps.every(s => s.experts.length >= 1))
  })
})

describe('CLI errors without a mesh', function () {
  this.timeout(60_000)
  it('a bad multiaddr is a usage error (exit 2, one line)', async () => {
    const r = await cli(['generate', 'x', '--bootstrap', '/ip4/not-an-ip/tcp/1'])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /^meshllm: bad multiaddr/)
    assert.equal(r.stderr.trim().split('\n').length, 1)
  })
  it('--speculative with --via is a usage error, not silently dropped (exit 2, one line)', async () => {
    const r = await cli(['generate', 'x', '--via', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWHdvXGAZE54K4W6MuRY1fPZ29xKuMk7NBYwJTHRsg42fS', '--speculative'])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /^meshllm: --speculative and --drafter need --bootstrap/)
    assert.equal(r.stderr.trim().split('\n').length, 1)
    for (const bad of [['--via', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWHdvXGAZE54K4W6MuRY1fPZ29xKuMk7NBYwJTHRsg42fS', '--record-cache', 'x.json'], ['--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWHdvXGAZE54K4W6MuRY1fPZ29xKuMk7NBYwJTHRsg42fS', '--record-cache', '']]) {
      const e = await cli(['generate', 'x', ...bad])
      assert.equal(e.code, 2, `${bad.join(' ')}: ${e.stderr}`)
      assert.equal(e.stderr.trim().split('\n').length, 1)
    }
  })
  it('an unknown model path exits 6 with one line', async () => {
    const r = await cli(['join', '--model', '/nonexistent/model.gguf'])
    assert.equal(r.code, 6)
    assert.match(r.stderr, /^meshllm: model file not found/)
  })
  it('no reachable bootstrap peer exits 7', async () => {
    const r = await cli(['generate', 'x', '--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGCt3GJefWnii68ZRpUsAZBwp6SpvHn9YNMPTGWNVBFpo'], 60_000)
    assert.equal(r.code, 7)
  })
})
