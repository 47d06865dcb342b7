/**
 * Quotas and bounds against one hostile peer (issue "Hostile peers" §9), each tested AT its
 * bound (the limit is allowed, one more is refused): sessions per peer on an expert, tokens a
 * session may evaluate (rollback included) and its lifetime, generate streams and K per peer,
 * the routed-generation token of `join` and `--no-route`, and expert-record lifetimes in the
 * real DHT. Real libp2p nodes on loopback, real models (meshtest-c), real `join` processes.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RecordEnvelope } from '@libp2p/peer-record'
import { defaultLogger } from '@libp2p/logger'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { ExpertAdvertiser } from '../../src/expert/advertise.js'
import { startExpert, type Expert } from '../../src/expert/expert.js'
import { createMeshNode, nodePrivateKey, type MeshNode } from '../../src/node/node.js'
import {
  generateService, generateTokenFrom, generateVia, parseGenerateRequest, DEFAULT_MAX_REMOTE_K, GENERATE_PROTOCOL, type GenerateService
} from '../../src/router/generate-service.js'
import { GenerateEvent, GenerateRequest } from '../../src/router/pb/generate.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { decodeFrameResponse, decodeOpenResponse, encodeRequest } from '../../src/wire/infer-codec.js'
import {
  ExpertRecordPayload, expertRecordKey, openExpertRecord, sealExpertRecord, validateExpertRecordEntry, MAX_CLOCK_SKEW_MS, MAX_RECORD_LIFETIME_MS, type ExpertRecord
} from '../../src/wire/record.js'
import { INFER_PROTOCOL, INFER_PROTOCOL_VERSION, MAX_RESPONSE_BYTES, Status, type InferRequest } from '../../src/wire/types.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))
const PROMPT = Uint32Array.from([128000, 791, 10206])
const REQUEST: GenerateRequest = { prompt: 'The kernel', k: 1, maxTokens: 200, temperature: 0.8, topK: 0, topP: 0.95, seed: 3n, hasSeed: true, stop: [], rule: 'mixture' }
/** the expert's limits in this file */
const MAX_SESSIONS = 6
const PER_PEER = 3
const SESSION_TOKENS = 40
const SESSION_MS = 3_000
/** an open past the quota waits this long for a slot before BUSY */
const QUEUE_MS = 1_000

type Lp = ReturnType<typeof lpStream<Stream>>

describe('hostile peers: quotas and bounds, each at its limit (real nodes)', function () {
  this.timeout(60_000)
  /** expert with MAX_SESSIONS slots, PER_PEER per peer, SESSION_TOKENS / SESSION_MS per session */
  let expert: Expert
  /** routing node (expert + /meshllm/generate with the default limits), like `meshllm join` */
  let routing: Expert
  let router: Router
  /** two hostile peers with their own identities */
  let a: MeshNode, b: MeshNode

  const expertAddr = (): string => expert.node.getMultiaddrs()[0].toString()
  const routingAddr = (): string => routing.node.getMultiaddrs()[0].toString()
  const generate = (): GenerateService => routing.node.services.generate as GenerateService

  before(async function () {
    this.timeout(120_000)
    expert = await startExpert({ model: 'meshtest-c', listen: ['/ip4/127.0.0.1/tcp/0'], threads: 1, maxSessions: MAX_SESSIONS, maxSessionsPerPeer: PER_PEER, maxSessionTokens: SESSION_TOKENS, maxSessionMs: SESSION_MS, queueTimeoutMs: QUEUE_MS })
    routing = await startExpert({
      model: 'meshtest-c',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [expertAddr()],
      threads: 1,
      extraServices: { generate: generateService({ router: () => router }) }
    })
    router = new Router(routing.node, await RouterTokenizer.load(routing.host.modelPath))
    ;[a, b] = await Promise.all([0, 1].map(async () => { const n = await createMeshNode({ listen: [], dhtServer: false }); await n.start(); return n }))
    await waitFor(async () => (await router.experts(true)).compatible.some(r => r.peerId.equals(expert.node.peerId)), 30_000, 'the routing node to find the expert')
  })

  after(async function () {
    this.timeout(30_000)
    await Promise.all([a?.stop(), b?.stop()])
    await router?.tokenizer.close()
    await routing?.stop()
    await expert?.stop()
  })

  async function infer (node: MeshNode, addr = expertAddr()): Promise<{ stream: Stream, lp: Lp, request: (r: InferRequest) => Promise<Uint8Array>, close: () => Promise<void> }> {
    const stream = await node.dialProtocol(multiaddr(addr), INFER_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const lp = lpStream(stream, { maxDataLength: MAX_RESPONSE_BYTES })
    const request = async (r: InferRequest): Promise<Uint8Array> => {
      const signal = AbortSignal.timeout(20_000)
      await lp.write(encodeRequest(r), { signal })
      return (await lp.read({ signal })).subarray()
    }
    const close = async (): Promise<void> => {
      await lp.write(encodeRequest({ type: 'close' }), { signal: AbortSignal.timeout(5_000) }).catch(() => {})
      await stream.close().catch(() => {})
    }
    return { stream, lp, request, close }
  }
  const open = (draft?: Uint32Array): Extract<InferRequest, { type: 'open' }> => ({ type: 'open', protocolVersion: INFER_PROTOCOL_VERSION, tokenizerFingerprint: expert.host.summary.fingerprint, tokens: PROMPT, topK: 256, ...(draft != null ? { draft } : {}) })
  const openStatus = async (node: MeshNode, addr?: string): Promise<{ status: Status, close: () => Promise<void> }> => {
    const s = await infer(node, addr)
    const res = decodeOpenResponse(await s.request(open()))
    if (res.status !== Status.OK) await s.close()
    return { status: res.status, close: s.close }
  }
  const allFree = async (e: Expert = expert): Promise<void> => { await waitFor(() => e.host.freeSlots === e.host.maxSessions, 15_000, 'every session slot to be freed') }

  describe('/meshllm/infer', () => {
    it(`one peer may take every idle slot, but is sure of only ${PER_PEER}: another peer's Opens end its borrowed sessions (BUSY) and get their slots; beyond its quota with no idle slot, it waits ${QUEUE_MS} ms and is refused`, async () => {
      const held: Array<() => Promise<void>> = []
      try {
        const greedy: Array<Awaited<ReturnType<typeof infer>>> = []
        for (let i = 0; i < MAX_SESSIONS; i++) {
          const s = await infer(a)
          assert.equal(decodeOpenResponse(await s.request(open())).status, Status.OK, `peer a, session ${i + 1} of ${MAX_SESSIONS} (the slots are idle)`)
          greedy.push(s)
          held.push(s.close)
        }
        // peer b, below its quota: each Open waits while one of a's borrowed sessions (the
        // newest) is ended with BUSY, then takes its slot
        for (let i = 0; i < MAX_SESSIONS - PER_PEER; i++) {
          const s = await openStatus(b)
          assert.equal(s.status, Status.OK, `peer b, session ${i + 1}`)
          held.push(s.close)
          const victim = greedy[MAX_SESSIONS - 1 - i]
          assert.equal(decodeFrameResponse((await victim.lp.read({ signal: AbortSignal.timeout(5_000) })).subarray()).status, Status.BUSY, `a's borrowed session ${MAX_SESSIONS - i} ended`)
        }
        assert.equal(expert.service.sessionsOf(a.peerId.toString()), PER_PEER, 'a keeps its quota')
        assert.equal(expert.service.stats.sessionsPreempted, MAX_SESSIONS - PER_PEER)
        // every slot in use and a at its quota: one more Open of a waits for a slot, then BUSY
        const t0 = performance.now()
        const extra = await openStatus(a)
        assert.equal(extra.status, Status.BUSY, `session ${PER_PEER + 1} of peer a, no idle slot`)
        assert.ok(performance.now() - t0 >= QUEUE_MS * 0.9, 'after waiting in the queue for a slot')
        assert.ok(expert.service.stats.sessionsRefusedPerPeer >= 1)
        console.log(`      one peer took ${MAX_SESSIONS} idle slots, keeps ${expert.service.sessionsOf(a.peerId.toString())} once another peer needs them`)
        // a freed session is a session the peer may open again
        await held.shift()?.()
        await waitFor(() => expert.service.sessionsOf(a.peerId.toString()) === PER_PEER - 1, 10_000, 'the closed session to be released')
        const again = await openStatus(a)
        assert.equal(again.status, Status.OK)
        held.push(again.close)
      } finally {
        await Promise.all(held.map(async c => await c()))
      }
      await allFree()
    })

    it(`a session evaluates at most ${SESSION_TOKENS} tokens, rolled-back ones included: exactly ${SESSION_TOKENS} served, one more CONTEXT_FULL`, async () => {
      const s = await infer(a)
      const frames = async (n: number): Promise<void> => {
        for (let i = 0; i < n; i++) assert.equal(decodeFrameResponse(await s.lp.read({ signal: AbortSignal.timeout(10_000) })).status, Status.OK)
      }
      const draft = (n: number, base: number): Uint32Array => Uint32Array.from({ length: n }, (_, i) => base + i)
      try {
        // open: 3 prompt tokens + 5 draft = 8
        assert.equal(decodeOpenResponse(await s.request(open(draft(5, 300)))).status, Status.OK)
        await frames(5)
        let evaluated = 8
        // four rounds of a rejected draft: roll back 5, one token + 5 draft tokens = 6 each
        for (let r = 0; r < 4; r++) {
          assert.equal(decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([400 + r]), draft: draft(5, 500), rollback: 5 })).status, Status.OK)
          await frames(5)
          evaluated += 6
        }
        // one token + 7 draft: exactly the budget
        assert.equal(decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([600]), draft: draft(7, 700), rollback: 5 })).status, Status.OK)
        await frames(7)
        evaluated += 8
        assert.equal(evaluated, SESSION_TOKENS)
        // the context holds far fewer tokens than that; one more token is refused anyway
        const over = decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([800]), rollback: 7 }))
        assert.equal(over.status, Status.CONTEXT_FULL)
      } finally {
        s.stream.abort(new Error('done'))
      }
      await allFree()
    })

    it(`a session older than ${SESSION_MS} ms is ended with BUSY at its next request`, async () => {
      const s = await infer(a)
      try {
        assert.equal(decodeOpenResponse(await s.request(open())).status, Status.OK)
        const opened = Date.now()
        assert.equal(decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([279]) })).status, Status.OK)
        // stay idle-timeout-alive but let the lifetime pass
        await new Promise(resolve => setTimeout(resolve, Math.max(0, opened + SESSION_MS + 200 - Date.now())))
        assert.equal(decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([1176]) })).status, Status.BUSY)
      } finally {
        s.stream.abort(new Error('done'))
      }
      await allFree()
    })
  })

  describe('/meshllm/generate', () => {
    async function start (node: MeshNode, req: GenerateRequest = REQUEST): Promise<{ stream: Stream, first: GenerateEvent }> {
      const stream = await node.dialProtocol(multiaddr(routingAddr()), GENERATE_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      const lp = lpStream(stream, { maxDataLength: 64 * 1024 })
      const signal = AbortSignal.timeout(30_000)
      await lp.write(GenerateRequest.encode(req), { signal })
      return { stream, first: GenerateEvent.decode(await lp.read({ signal })) }
    }

    it('a peer runs at most 2 generations at once on a routing node (the third is TooManyGenerationsError); another peer is admitted', async () => {
      const streams: Stream[] = []
      try {
        for (let i = 0; i < 2; i++) {
          const g = await start(a)
          streams.push(g.stream)
          assert.ok(g.first.token != null, `generation ${i + 1} of peer a runs: ${JSON.stringify(g.first.error)}`)
        }
        const third = await start(a)
        streams.push(third.stream)
        assert.equal(third.first.error?.name, 'TooManyGenerationsError')
        const other = await start(b)
        streams.push(other.stream)
        assert.ok(other.first.token != null, `peer b runs: ${JSON.stringify(other.first.error)}`)
        assert.equal(generate().active, 3)
      } finally {
        for (const s of streams) s.abort(new Error('done'))
      }
      await waitFor(() => generate().active === 0, 15_000, 'every generation to end')
      await allFree()
    })

    it(`K for a remote caller: k = ${DEFAULT_MAX_REMOTE_K} runs, k = ${DEFAULT_MAX_REMOTE_K + 1} is InvalidGenerateRequestError`, async () => {
      const atLimit = await start(a, { ...REQUEST, k: DEFAULT_MAX_REMOTE_K, maxTokens: 2 })
      atLimit.stream.abort(new Error('done'))
      assert.ok(atLimit.first.token != null || atLimit.first.done != null, `k = ${DEFAULT_MAX_REMOTE_K}: ${JSON.stringify(atLimit.first.error)}`)
      const over = await start(a, { ...REQUEST, k: DEFAULT_MAX_REMOTE_K + 1 })
      over.stream.abort(new Error('done'))
      assert.equal(over.first.error?.name, 'InvalidGenerateRequestError')
      // and the limit is the service's to set
      assert.equal(parseGenerateRequest({ ...REQUEST, k: 12 }, 2048, 12).k, 12)
      assert.throws(() => parseGenerateRequest({ ...REQUEST, k: 13 }, 2048, 12), { name: 'InvalidGenerateRequestError' })
      await waitFor(() => generate().active === 0, 15_000, 'every generation to end')
    })
  })

  describe('`meshllm join` flags', () => {
    let tokened: SpawnedExpert | undefined
    let noRoute: SpawnedExpert | undefined
    let tokenFile: string
    const TOKEN = 'routed-generation-secret-0123456789'
    before(async function () {
      this.timeout(120_000)
      const dir = await mkdtemp(joinPath(tmpdir(), 'meshllm-quota-'))
      tokenFile = joinPath(dir, 'generate.token')
      await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 })
      ;[tokened, noRoute] = await Promise.all([
        spawnExpert('meshtest-c', ['--bootstrap', expertAddr(), '--generate-token', tokenFile]),
        spawnExpert('meshtest-c', ['--bootstrap', expertAddr(), '--no-route', '--max-sessions-per-peer', '1', '--queue-timeout', '0'])
      ])
    })
    after(async function () {
      this.timeout(15_000)
      await Promise.all([tokened, noRoute].map(async e => { if (e != null) await stopExpert(e) }))
    })

    it('--generate-token <file>: no token or a wrong one is GenerateUnauthorizedError, the right one routes; the token is not in argv', async () => {
      const via = multiaddr(tokened!.addr)
      const opts = { k: 1, maxTokens: 3, seed: 1, signal: AbortSignal.timeout(30_000) }
      await assert.rejects(generateVia(a, via, 'The kernel', opts), (err: any) => err.name === 'RemoteGenerateError' && err.remoteName === 'GenerateUnauthorizedError')
      await assert.rejects(generateVia(a, via, 'The kernel', { ...opts, token: `${TOKEN}x` }), (err: any) => err.remoteName === 'GenerateUnauthorizedError')
      const r = await generateVia(a, via, 'The kernel', { ...opts, token: TOKEN })
      assert.ok(r.tokens >= 1)
      const argv = await readFile(`/proc/${tokened!.child.pid as number}/cmdline`, 'utf8')
      assert.ok(!argv.includes(TOKEN), 'the token never appears in the process arguments')
      // the client side reads the same file, or the environment
      assert.equal(await generateTokenFrom(tokenFile), TOKEN)
      assert.equal(await generateTokenFrom(undefined, { MESHLLM_GENERATE_TOKEN: ` ${TOKEN} ` }), TOKEN)
      await assert.rejects(generateTokenFrom(joinPath(tmpdir(), 'no-such-meshllm-token')), { name: 'GenerateTokenFileError' })
    })

    it('--no-route: /meshllm/generate is not served at all; --max-sessions-per-peer 1 --queue-timeout 0: one session, the second BUSY at once', async () => {
      await assert.rejects(a.dialProtocol(multiaddr(noRoute!.addr), GENERATE_PROTOCOL, { signal: AbortSignal.timeout(10_000) }), { name: 'UnsupportedProtocolError' })
      const first = await openStatus(a, noRoute!.addr)
      assert.equal(first.status, Status.OK)
      const second = await openStatus(a, noRoute!.addr)
      assert.equal(second.status, Status.BUSY)
      await first.close()
    })

    it('--no-route with --generate-token is a usage error (exit 2) before any model loads', async () => {
      const child = spawn(process.execPath, [BIN, 'join', '--model', 'meshtest-c', '--no-route', '--generate-token', tokenFile], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      child.stderr.on('data', d => { stderr += String(d) })
      const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
      assert.equal(code, 2, stderr)
    })
  })

  describe('expert records', () => {
    const record = (over: Partial<ExpertRecord> = {}): ExpertRecord => {
      const adv = new ExpertAdvertiser(expert.node, expert.host, { tokensPerSecond: 10 }, defaultLogger().forComponent('test'))
      return { ...adv.buildRecord(), ...over }
    }
    /** signs what sealExpertRecord refuses to */
    const forceSeal = async (r: ExpertRecord): Promise<Uint8Array> => (await RecordEnvelope.seal(new ExpertRecordPayload(r), nodePrivateKey(expert.node))).marshal()

    it('a record may expire at most 1 h + 60 s after the reader\'s clock: exactly that is accepted, 1 ms more refused (seal, open, DHT validator)', async () => {
      const now = Date.now()
      const limit = now + MAX_RECORD_LIFETIME_MS + MAX_CLOCK_SKEW_MS
      const atLimit = record({ issuedAtMs: now, expiresAtMs: limit })
      await openExpertRecord(await sealExpertRecord(atLimit, nodePrivateKey(expert.node), { now }), { now })
      const over = record({ issuedAtMs: now, expiresAtMs: limit + 1 })
      await assert.rejects(sealExpertRecord(over, nodePrivateKey(expert.node), { now }), { name: 'InvalidRecordError' })
      await assert.rejects(openExpertRecord(await forceSeal(over), { now }), { name: 'InvalidRecordError' })
      const century = await forceSeal(record({ issuedAtMs: now, expiresAtMs: now + 100 * 365 * 86_400_000 }))
      await assert.rejects(validateExpertRecordEntry(expertRecordKey(expert.node.peerId), century), { name: 'InvalidRecordError' })
    })

    it('the real DHT refuses to store a 100-year record; the advertiser caps its lifetime at 1 h and refreshes before expiry', async () => {
      const key = expertRecordKey(expert.node.peerId)
      const century = await forceSeal(record({ issuedAtMs: Date.now(), expiresAtMs: Date.now() + 100 * 365 * 86_400_000, seq: Number.MAX_SAFE_INTEGER - 1 }))
      const drain = async (it: AsyncIterable<unknown>): Promise<void> => { for await (const _ of it) { void _ } }
      await drain(expert.node.services.dht.put(key, century, { signal: AbortSignal.timeout(10_000) })).catch(() => {})
      // whatever a node returns for the key, it is never the forged record
      const got: Uint8Array[] = []
      try {
        for await (const ev of routing.node.services.dht.get(key, { signal: AbortSignal.timeout(10_000) }) as AsyncIterable<any>) if (ev.name === 'VALUE') got.push(ev.value)
      } catch {}
      assert.ok(got.every(v => Buffer.compare(Buffer.from(v), Buffer.from(century)) !== 0), 'the 100-year record is not served by any DHT node')
      const adv = new ExpertAdvertiser(expert.node, expert.host, { tokensPerSecond: 10, ttlMs: 100 * 365 * 86_400_000, refreshMs: 100 * 365 * 86_400_000 }, defaultLogger().forComponent('test'))
      const r = adv.buildRecord()
      assert.equal(r.expiresAtMs - r.issuedAtMs, MAX_RECORD_LIFETIME_MS)
      assert.equal(adv.ttlMs, MAX_RECORD_LIFETIME_MS)
      assert.ok(adv.refreshMs <= adv.ttlMs / 2, `refreshed every ${adv.refreshMs} ms, before the ${adv.ttlMs} ms lifetime ends`)
    })
  })
})
