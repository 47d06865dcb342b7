/**
 * Hostile clients against the stream handlers (issue "Hostile peers" §1, §9): a client that
 * vanishes at every point of /meshllm/generate and /meshllm/infer (right after opening,
 * mid-request with a partial length-prefixed message, after k responses, during a HALT)
 * never ends the node's process, never leaves a rejected promise behind, never leaks a
 * session slot, and the node keeps serving. Real libp2p nodes on loopback, real models
 * (meshtest-c), one real `meshllm join` child process.
 */
import assert from 'node:assert/strict'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { startExpert, type Expert } from '../../src/expert/expert.js'
import type { ModelSession } from '../../src/expert/model-host.js'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { generateService, generateVia, GENERATE_PROTOCOL, type GenerateService } from '../../src/router/generate-service.js'
import { GenerateEvent, GenerateRequest } from '../../src/router/pb/generate.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { decodeFrameResponse, decodeOpenResponse, encodeRequest } from '../../src/wire/infer-codec.js'
import { INFER_PROTOCOL, INFER_PROTOCOL_VERSION, MAX_RESPONSE_BYTES, Status, type InferRequest } from '../../src/wire/types.js'
import { waitFor } from '../helpers/wait.js'
import { abortListenersLeft } from '../helpers/service-harness.js'

const PROMPT = Uint32Array.from([128000, 791, 10206])
const REQUEST: GenerateRequest = { prompt: 'The kernel', k: 1, maxTokens: 200, temperature: 0.8, topK: 0, topP: 0.95, seed: 11n, hasSeed: true, stop: [], rule: 'mixture' }

function alive (e: SpawnedExpert): boolean {
  return e.child.exitCode == null && e.child.signalCode == null
}

function lengthPrefixed (bytes: Uint8Array): Uint8Array {
  const lp = lpEncodeLength(bytes.byteLength)
  const out = new Uint8Array(lp.byteLength + bytes.byteLength)
  out.set(lp)
  out.set(bytes, lp.byteLength)
  return out
}

function lpEncodeLength (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n >>>= 7 }
  out.push(n)
  return Uint8Array.from(out)
}

describe('hostile clients: vanishing at every point of a stream (real nodes)', function () {
  this.timeout(60_000)
  /** expert the routing nodes route to */
  let helper: Expert
  /** in-process routing node: expert + /meshllm/generate, like `meshllm join` */
  let routing: Expert
  let router: Router
  let haltReason: string | undefined
  let client: MeshNode
  const escaped: unknown[] = []
  const onEscape = (err: unknown): void => { escaped.push(err) }

  const helperAddr = (): string => helper.node.getMultiaddrs()[0].toString()
  const routingAddr = (): string => routing.node.getMultiaddrs()[0].toString()
  const generate = (): GenerateService => routing.node.services.generate as GenerateService

  before(async function () {
    this.timeout(120_000)
    process.on('unhandledRejection', onEscape)
    helper = await startExpert({ model: 'meshtest-c', listen: ['/ip4/127.0.0.1/tcp/0'], threads: 1, maxSessions: 4 })
    routing = await startExpert({
      model: 'meshtest-c',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [helperAddr()],
      threads: 1,
      haltReason: () => haltReason,
      extraServices: { generate: generateService({ router: () => router }) }
    })
    router = new Router(routing.node, await RouterTokenizer.load(routing.host.modelPath), { haltReason: () => haltReason })
    client = await createMeshNode({ listen: [], dhtServer: false })
    await client.start()
    await waitFor(async () => (await router.experts(true)).compatible.some(r => r.peerId.equals(helper.node.peerId)), 30_000, 'the routing node to find the helper expert')
  })

  after(async function () {
    this.timeout(30_000)
    process.off('unhandledRejection', onEscape)
    await client?.stop()
    await router?.tokenizer.close()
    await routing?.stop()
    await helper?.stop()
  })

  beforeEach(() => { escaped.length = 0 })

  /** no promise a handler started was left to reject unobserved (in `join` that ends the process) */
  function noEscapes (): void {
    const seen = [...new Set(escaped.map(e => `${(e as any)?.name}: ${(e as any)?.message}`))]
    assert.deepEqual(seen, [], 'no rejection escaped a handler')
  }

  /** every routed generation ended, every session the routing node held on the helper is freed, and a new generation succeeds */
  async function routingStillServes (): Promise<void> {
    await waitFor(() => generate().active === 0, 15_000, 'the generate handlers to end')
    await waitFor(() => helper.host.freeSlots === helper.host.maxSessions, 15_000, 'the helper to free every session slot')
    const r = await generateVia(client, multiaddr(routingAddr()), 'The kernel', { k: 1, maxTokens: 4, seed: 1, signal: AbortSignal.timeout(30_000) })
    assert.ok(r.tokens >= 1 && r.tokens <= 4, `a normal generation after the hostile one: ${r.tokens} tokens`)
    assert.ok(['length', 'eos'].includes(r.finishReason))
    noEscapes()
  }

  async function openGenerate (addr: string): Promise<{ stream: Stream, lp: ReturnType<typeof lpStream<Stream>> }> {
    const stream = await client.dialProtocol(multiaddr(addr), GENERATE_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    return { stream, lp: lpStream(stream, { maxDataLength: 64 * 1024 }) }
  }

  /** sends a generate request and reads until `k` token events arrived */
  async function readTokens (lp: ReturnType<typeof lpStream<Stream>>, k: number, req = REQUEST): Promise<void> {
    const signal = AbortSignal.timeout(30_000)
    await lp.write(GenerateRequest.encode(req), { signal })
    for (let n = 0; n < k;) {
      const ev = GenerateEvent.decode(await lp.read({ signal }))
      // the peer's per-peer stream quota (2) refused this stream: named, so a caller may retry
      if (ev.error?.name === 'TooManyGenerationsError') throw Object.assign(new Error(ev.error.message), { name: ev.error.name })
      assert.ok(ev.done == null && ev.error == null, `the generation ended before ${k} tokens: ${JSON.stringify(ev.error ?? ev.done?.finishReason)}`)
      if (ev.token != null) n++
    }
  }

  describe('/meshllm/generate', () => {
    it('a client that resets the stream right after opening it', async () => {
      const { stream } = await openGenerate(routingAddr())
      stream.abort(new Error('client vanished'))
      await routingStillServes()
    })

    it('a client that sends half a length-prefixed request, then resets (and one that closes instead)', async () => {
      const req = lengthPrefixed(GenerateRequest.encode(REQUEST))
      const a = await openGenerate(routingAddr())
      a.stream.send(req.subarray(0, Math.floor(req.byteLength / 2)))
      a.stream.abort(new Error('client vanished mid-request'))
      const b = await openGenerate(routingAddr())
      b.stream.send(req.subarray(0, Math.floor(req.byteLength / 2)))
      await b.stream.close()
      await routingStillServes()
    })

    it('a client that resets after 3 token events (the reproduced crash)', async () => {
      const { stream, lp } = await openGenerate(routingAddr())
      await readTokens(lp, 3)
      stream.abort(new Error('client vanished after 3 tokens'))
      await routingStillServes()
      assert.ok(generate().stats.clientGone >= 1, 'the handler saw the client go')
    })

    it('a client that resets while a HALT ends its generation', async () => {
      const { stream, lp } = await openGenerate(routingAddr())
      await readTokens(lp, 2)
      // what `join` does on a HALT, and the client leaving at the same moment
      haltReason = 'adversarial test'
      routing.service.haltAll(haltReason)
      router.abortAll(haltReason)
      stream.abort(new Error('client vanished during the HALT'))
      await waitFor(() => generate().active === 0, 15_000, 'the generate handler to end')
      haltReason = undefined
      await routingStillServes()
    })
  })

  describe('/meshllm/infer', () => {
    async function openInfer (): Promise<{ stream: Stream, request: (r: InferRequest) => Promise<Uint8Array>, lp: ReturnType<typeof lpStream<Stream>> }> {
      const stream = await client.dialProtocol(multiaddr(helperAddr()), INFER_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      const lp = lpStream(stream, { maxDataLength: MAX_RESPONSE_BYTES })
      const request = async (r: InferRequest): Promise<Uint8Array> => {
        const signal = AbortSignal.timeout(20_000)
        await lp.write(encodeRequest(r), { signal })
        return (await lp.read({ signal })).subarray()
      }
      return { stream, request, lp }
    }
    const open = (tokens = PROMPT): Extract<InferRequest, { type: 'open' }> => ({ type: 'open', protocolVersion: INFER_PROTOCOL_VERSION, tokenizerFingerprint: helper.host.summary.fingerprint, tokens, topK: 256 })

    /** the helper freed every slot and serves a normal session */
    async function helperStillServes (): Promise<void> {
      await waitFor(() => helper.host.freeSlots === helper.host.maxSessions, 15_000, 'every session slot to be freed')
      const s = await openInfer()
      assert.equal(decodeOpenResponse(await s.request(open())).status, Status.OK)
      const f = decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([279]) }))
      assert.equal(f.status, Status.OK)
      assert.equal(f.status === Status.OK ? f.frame.position : -1, PROMPT.length + 1)
      await s.lp.write(encodeRequest({ type: 'close' }), { signal: AbortSignal.timeout(5_000) })
      await s.stream.close()
      await waitFor(() => helper.host.freeSlots === helper.host.maxSessions, 15_000, 'the normal session to be freed')
      noEscapes()
    }

    it('a router that resets right after opening the stream', async () => {
      const { stream } = await openInfer()
      stream.abort(new Error('router vanished'))
      await helperStillServes()
    })

    it('a router that sends half an Open, then resets (and one that closes instead)', async () => {
      const req = lengthPrefixed(encodeRequest(open()))
      const a = await openInfer()
      a.stream.send(req.subarray(0, Math.floor(req.byteLength / 2)))
      a.stream.abort(new Error('router vanished mid-request'))
      const b = await openInfer()
      b.stream.send(req.subarray(0, Math.floor(req.byteLength / 2)))
      await b.stream.close()
      await helperStillServes()
    })

    it('a router that resets while the expert evaluates its step, after 3 responses', async () => {
      const s = await openInfer()
      assert.equal(decodeOpenResponse(await s.request(open())).status, Status.OK)
      for (const t of [279, 1176]) assert.equal(decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([t]) })).status, Status.OK)
      // a long step, and gone before its frame can be written
      await s.lp.write(encodeRequest({ type: 'step', tokens: Uint32Array.from({ length: 200 }, (_, i) => 1000 + i) }), { signal: AbortSignal.timeout(5_000) })
      s.stream.abort(new Error('router vanished mid-evaluation'))
      await helperStillServes()
      assert.ok(helper.service.stats.sessionsGone >= 1, 'the expert saw the router go')
    })

    it('a router that resets while a HALT ends its session', async () => {
      const s = await openInfer()
      assert.equal(decodeOpenResponse(await s.request(open())).status, Status.OK)
      await s.lp.write(encodeRequest({ type: 'step', tokens: Uint32Array.from({ length: 100 }, (_, i) => 2000 + i) }), { signal: AbortSignal.timeout(5_000) })
      helper.service.haltAll('adversarial test')
      s.stream.abort(new Error('router vanished during the HALT'))
      await helperStillServes()
    })

    it('a HALT during a rollback: the step is answered HALTED, with no further frame', async () => {
      const host = helper.host
      const openSession = host.openSession
      host.openSession = (): ModelSession => {
        const session = openSession.call(host)
        const rollback = session.rollback.bind(session)
        session.rollback = async (n: number) => { helper.service.haltAll('halt during a rollback'); await rollback(n) }
        return session
      }
      try {
        const s = await openInfer()
        assert.equal(decodeOpenResponse(await s.request({ ...open(), draft: Uint32Array.from([279, 1176]) })).status, Status.OK)
        for (let i = 0; i < 2; i++) assert.equal(decodeFrameResponse(await s.lp.read({ signal: AbortSignal.timeout(10_000) })).status, Status.OK) // one frame per draft token
        // the draft is rejected: roll both back and evaluate another token
        const res = decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([3]), rollback: 2 }))
        assert.equal(res.status, Status.HALTED, 'the answer to the rollback step is HALTED, not a frame')
        s.stream.abort(new Error('done'))
      } finally {
        host.openSession = openSession
      }
      await helperStillServes()
    })

    it('24 requests on one session leave no abort listener behind on a live signal', async () => {
      // 'abort' listeners added minus removed, per signal, while the session runs (counted while it is still open)
      let s: Awaited<ReturnType<typeof openInfer>> | undefined
      const most = await abortListenersLeft(async () => {
        s = await openInfer()
        assert.equal(decodeOpenResponse(await s.request(open())).status, Status.OK)
        for (let i = 0; i < 24; i++) assert.equal(decodeFrameResponse(await s.request({ type: 'step', tokens: Uint32Array.from([279 + i]) })).status, Status.OK)
      })
      await s?.lp.write(encodeRequest({ type: 'close' }), { signal: AbortSignal.timeout(5_000) })
      await s?.stream.close()
      assert.ok(most < 8, `a live signal holds ${most} abort listeners after 24 requests`)
      noEscapes()
    })
  })

  describe('a real `meshllm join` process', () => {
    let join: SpawnedExpert
    before(async function () {
      this.timeout(120_000)
      join = await spawnExpert('meshtest-c', ['--bootstrap', helperAddr()])
    })
    after(async function () {
      this.timeout(15_000)
      if (join != null) await stopExpert(join)
    })

    it('survives --via clients vanishing at every point and keeps routing', async () => {
      const addr = join.addr
      // right after opening
      ;(await openGenerate(addr)).stream.abort(new Error('vanished'))
      // mid-request
      const req = lengthPrefixed(GenerateRequest.encode(REQUEST))
      const half = await openGenerate(addr)
      half.stream.send(req.subarray(0, 5))
      half.stream.abort(new Error('vanished mid-request'))
      // after 3 token events (the reproduced crash: the process died with StreamStateError)
      // the two streams above count against this peer's quota of 2 until the routing peer has
      // seen them go (a moment under load): until then a third is refused (TooManyGenerations,
      // and the stream closed, so the request write may fail first): open again until admitted
      let mid: Awaited<ReturnType<typeof openGenerate>> | undefined
      await waitFor(async () => {
        const s = await openGenerate(addr)
        try {
          await readTokens(s.lp, 3)
          mid = s
          return true
        } catch (err: any) {
          s.stream.abort(new Error('refused: retry'))
          if (err?.name === 'TooManyGenerationsError' || err?.name === 'StreamStateError') return false
          throw err
        }
      }, 15_000, 'the routing peer to admit a third generate stream')
      mid!.stream.abort(new Error('vanished after 3 tokens'))
      // and its expert side: gone mid-evaluation
      const inf = await client.dialProtocol(multiaddr(addr), INFER_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      const lp = lpStream(inf, { maxDataLength: MAX_RESPONSE_BYTES })
      await lp.write(encodeRequest({ type: 'open', protocolVersion: INFER_PROTOCOL_VERSION, tokenizerFingerprint: helper.host.summary.fingerprint, tokens: Uint32Array.from({ length: 200 }, (_, i) => 1000 + i), topK: 256 }), { signal: AbortSignal.timeout(5_000) })
      inf.abort(new Error('vanished mid-evaluation'))
      // the process is alive and routes a normal generation
      // (the same quota: the stream aborted just above may count for a moment longer)
      let r: Awaited<ReturnType<typeof generateVia>> | undefined
      await waitFor(async () => {
        try {
          r = await generateVia(client, multiaddr(addr), 'The kernel', { k: 1, maxTokens: 4, seed: 2, signal: AbortSignal.timeout(30_000) })
          return true
        } catch (err: any) {
          if (err?.name === 'RemoteGenerateError' && err.remoteName === 'TooManyGenerationsError') return false
          throw err
        }
      }, 15_000, 'the routing peer to admit a normal generation')
      assert.ok(r!.tokens >= 1)
      assert.ok(alive(join), `the join process is alive (stderr: ${join.stderr().slice(-600)})`)
      assert.doesNotMatch(join.stderr(), /StreamStateError|unhandled/i)
      assert.ok(peerIdFromString(addr.split('/p2p/')[1]) != null)
    })
  })
})
