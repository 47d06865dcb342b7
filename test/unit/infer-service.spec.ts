/**
 * InferService (/meshllm/infer/1.0.0, expert side) over in-memory stream pairs from
 * @libp2p/utils, with a deterministic fake model behind the InferHost seam: the protocol's
 * edge cases, each at its bound, without a process, a node or a model (the same promises
 * test/adversarial/streams.spec.ts and quotas.spec.ts check end to end with real ones).
 *
 * Timers: Node's built-in MockTimers (node:test `mock.timers`, no dependency) fake `Date` for
 * the session lifetime and `setTimeout` for the evaluation deadline. The idle and write
 * deadlines are AbortSignal.timeout, which no fake-timer library fakes: those tests configure
 * short real deadlines through InferServiceInit instead.
 */
import assert from 'node:assert/strict'
import { mock } from 'node:test'
import { defaultLogger } from '@libp2p/logger'
import { lpStream } from '@libp2p/utils'
import type { PeerId, Stream } from '@libp2p/interface'
import { InferService, DEFAULT_MAX_SESSIONS_PER_PEER, type InferHost, type InferServiceInit, type InferSession } from '../../src/expert/infer-service.js'
import type { EvaluateOptions, EvaluateResult } from '../../src/expert/model-host.js'
import { BusyError } from '../../src/util/errors.js'
import { ExpertSession } from '../../src/router/expert-client.js'
import { decodeFrameResponse, decodeOpenResponse, encodeRequest } from '../../src/wire/infer-codec.js'
import { Frame as PbFrame, OpenInfo as PbOpenInfo } from '../../src/wire/pb/infer.js'
import { INFER_PROTOCOL, INFER_PROTOCOL_VERSION, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, Status, type Frame, type InferRequest } from '../../src/wire/types.js'
import { abortListenersLeft, dial, fakeRegistrar, lengthPrefix, newPeerId, settle, sleep, type FakeRegistrar } from '../helpers/service-harness.js'

const FINGERPRINT = new Uint8Array(32).fill(7)
const CONTEXT = 64

/** a frame that depends only on its position (four listed ids, the rest in the tail) */
function frameAt (position: number, topK: number): Frame {
  const n = Math.max(1, Math.min(4, topK))
  const ids = Uint32Array.from({ length: n }, (_, i) => 100 + (position % 50) + i)
  const logprobs = Float32Array.from({ length: n }, (_, i) => -(i + 1))
  let listed = 0
  for (const lp of logprobs) listed += Math.exp(lp)
  return { position, ids, logprobs, tailMass: 1 - listed }
}

interface Gate { promise: Promise<void>, open: () => void }
function gate (): Gate {
  let open!: () => void
  const promise = new Promise<void>(resolve => { open = resolve })
  return { promise, open }
}

/** a KV sequence: its position, what it evaluated, whether it was closed */
class FakeSession implements InferSession {
  position = 0
  closed = false
  evaluating = false
  evaluated = 0
  constructor (private readonly host: FakeHost) {}

  async evaluateScored (tokens: ArrayLike<number>, draft: ArrayLike<number> = [], topK = 256, opts: EvaluateOptions = {}): Promise<EvaluateResult> {
    if (this.closed) throw new Error('session closed')
    if (this.evaluating) throw new Error('session busy: one request at a time')
    this.evaluating = true
    try {
      await this.host.onEvaluate?.(this)
      const first = this.position + tokens.length
      this.position += tokens.length + draft.length
      this.evaluated += tokens.length + draft.length
      const frames = Array.from({ length: draft.length + 1 }, (_, i) => frameAt(first + i, topK))
      if (opts.target !== undefined) frames[frames.length - 1].targetLogprob = -0.5
      return opts.scorePrompt === true && tokens.length > 1 ? { frames, promptLogprob: -(tokens.length - 1), promptScored: tokens.length - 1 } : { frames }
    } finally {
      this.evaluating = false
    }
  }

  async rollback (n: number): Promise<void> {
    await this.host.onRollback?.(this)
    this.position -= n
  }

  async close (): Promise<void> {
    assert.equal(this.evaluating, false, 'a session is never closed under a running evaluation')
    this.closed = true
    this.host.sessions.delete(this)
  }
}

class FakeHost implements InferHost {
  readonly summary = { name: 'fake-model', fingerprint: FINGERPRINT }
  readonly sessions = new Set<FakeSession>()
  readonly opened: FakeSession[] = []
  onEvaluate?: (s: FakeSession) => Promise<void> | void
  onRollback?: (s: FakeSession) => Promise<void> | void
  constructor (readonly contextSize = CONTEXT, readonly maxSessions = 4) {}
  get freeSlots (): number { return this.maxSessions - this.sessions.size }
  openSession (): FakeSession {
    if (this.sessions.size >= this.maxSessions) throw new BusyError(`all ${this.maxSessions} session slots are in use`)
    const s = new FakeSession(this)
    this.sessions.add(s)
    this.opened.push(s)
    return s
  }
}

interface Client {
  stream: Stream
  server: Stream
  done: Promise<void>
  closeListenersBefore: number
  send: (r: InferRequest) => Promise<void>
  read: () => Promise<Uint8Array>
  request: (r: InferRequest) => Promise<Uint8Array>
}

const open = (tokens: ArrayLike<number> = [1, 2, 3], over: Partial<Extract<InferRequest, { type: 'open' }>> = {}): InferRequest =>
  ({ type: 'open', protocolVersion: INFER_PROTOCOL_VERSION, tokenizerFingerprint: FINGERPRINT, tokens: Uint32Array.from(tokens), topK: 256, ...over })
const step = (tokens: ArrayLike<number>, over: Partial<Extract<InferRequest, { type: 'step' }>> = {}): InferRequest =>
  ({ type: 'step', tokens: Uint32Array.from(tokens), ...over })
const ids = (n: number, base = 10): Uint32Array => Uint32Array.from({ length: n }, (_, i) => base + i)

const statusOf = (bytes: Uint8Array): Status => decodeFrameResponse(bytes).status

describe('InferService over in-memory streams (fake model)', function () {
  this.timeout(5_000)
  let alice: PeerId, bob: PeerId
  let host: FakeHost
  let registrar: FakeRegistrar
  let service: InferService

  before(async () => { [alice, bob] = await Promise.all([newPeerId(), newPeerId()]) })

  async function startService (init: Partial<InferServiceInit> = {}, h = new FakeHost()): Promise<void> {
    host = h
    registrar = fakeRegistrar()
    service = new InferService({ registrar, logger: defaultLogger() }, { host, ...init })
    await service.start()
  }

  afterEach(async () => {
    mock.timers.reset()
    if (service?.isStarted()) await service.stop()
  })

  async function connect (peer: PeerId = alice): Promise<Client> {
    const { stream, server, done, closeListenersBefore } = await dial(registrar, INFER_PROTOCOL, peer)
    const lp = lpStream(stream, { maxDataLength: MAX_RESPONSE_BYTES })
    const send = async (r: InferRequest): Promise<void> => { await lp.write(encodeRequest(r), { signal: AbortSignal.timeout(1_000) }) }
    const read = async (): Promise<Uint8Array> => (await lp.read({ signal: AbortSignal.timeout(1_000) })).subarray()
    return { stream, server, done, closeListenersBefore, send, read, request: async (r) => { await send(r); return await read() } }
  }

  /**
   * the expert answered its last word and closed its side (the client reads EOF), and the
   * handler left no listener on the stream, which lives on until the client closes its side
   */
  async function expertClosed (c: Client): Promise<void> {
    await c.done
    await settle()
    assert.equal(c.stream.remoteWriteStatus, 'closed', 'the expert closed its side of the stream')
    assert.equal(c.server.status, 'open', 'the client has not closed its side yet')
    assert.equal(c.server.listenerCount('close'), c.closeListenersBefore + 1, "only lpStream's own 'close' listener remains (streamLifetime's is removed)")
    c.stream.abort(new Error('test done'))
  }

  /** nothing of a session outlives its stream */
  function allFree (): void {
    assert.equal(host.freeSlots, host.maxSessions, 'every slot is free')
    assert.ok(host.opened.every(s => s.closed), 'every session was closed')
    assert.equal(service.sessionsOf(alice.toString()), 0)
    assert.equal(service.sessionsOf(bob.toString()), 0)
  }

  it('registers the handler with stream limits; unregisters on stop', async () => {
    await startService()
    const reg = registrar.handlers.get(INFER_PROTOCOL)
    assert.ok(reg != null)
    assert.ok((reg.options?.maxInboundStreams ?? 0) >= 64, 'a burst of refusals is answered BUSY, not reset by libp2p')
    await service.stop()
    assert.equal(registrar.handlers.size, 0)
  })

  it('open (with a draft) → OpenInfo + one frame per draft token; step with rollback → frames; close frees the session', async () => {
    await startService()
    const c = await connect()
    const o = decodeOpenResponse(await c.request(open([1, 2, 3], { draft: ids(2), scorePrompt: true })))
    assert.equal(o.status, Status.OK)
    if (o.status !== Status.OK) return
    assert.equal(o.open.modelName, 'fake-model')
    assert.equal(o.open.contextLength, CONTEXT)
    assert.equal(o.open.freeSlots, host.maxSessions - 1)
    assert.equal(o.open.frame.position, 3)
    assert.equal(o.open.promptScored, 2)
    for (const position of [4, 5]) {
      const f = decodeFrameResponse(await c.read())
      assert.equal(f.status === Status.OK ? f.frame.position : -1, position)
    }
    // both draft tokens rejected: roll them back, append one token, draft one more
    const f = decodeFrameResponse(await c.request(step([42], { rollback: 2, draft: ids(1), target: 7 })))
    assert.equal(f.status === Status.OK ? f.frame.position : -1, 4)
    const last = decodeFrameResponse(await c.read())
    assert.equal(last.status === Status.OK ? last.frame.targetLogprob : undefined, -0.5, 'teacher forcing: the last frame carries the target')
    assert.equal(service.sessionsOf(alice.toString()), 1)
    await c.send({ type: 'close' })
    await expertClosed(c)
    allFree()
    assert.equal(service.stats.sessionsOpened, 1)
    assert.equal(service.stats.frames, 5)
  })

  it('an Open asking for compact frames gets every frame of its session compact (OpenInfo, draft, steps); one without, full ones', async () => {
    await startService()
    /** the logprobs bytes of a response's frame: [full (2 per entry), compact (1 per entry)] */
    const encodingOf = (raw: Uint8Array, isOpen = false): [number, number] => {
      const f = isOpen ? PbOpenInfo.decode(raw.subarray(1)).frame : PbFrame.decode(raw.subarray(1))
      return [f?.logprobs.byteLength ?? -1, f?.logprobsU8?.byteLength ?? -1]
    }
    const c = await connect()
    assert.deepEqual(encodingOf(await c.request(open([1, 2, 3], { draft: ids(1), compactFrames: true })), true), [0, 4])
    assert.deepEqual(encodingOf(await c.read()), [0, 4])
    assert.deepEqual(encodingOf(await c.request(step([42], { rollback: 1 }))), [0, 4])
    await c.send({ type: 'close' })
    await expertClosed(c)
    const d = await connect()
    assert.deepEqual(encodingOf(await d.request(open([1, 2, 3])), true), [8, 0])
    assert.deepEqual(encodingOf(await d.request(step([42]))), [8, 0])
    await d.send({ type: 'close' })
    await expertClosed(d)
    allFree()
  })

  describe('malformed and out-of-order requests: INVALID_REQUEST / INCOMPATIBLE, then the expert closes', () => {
    const cases: Array<[string, Uint8Array[], Status]> = [
      ['protobuf garbage', [Uint8Array.from([0xff, 0xff, 0xff])], Status.INVALID_REQUEST],
      ['a step before open', [encodeRequest(step([1]))], Status.INVALID_REQUEST],
      ['a protocol version this expert does not speak', [encodeRequest(open([1], { protocolVersion: INFER_PROTOCOL_VERSION + 1 }))], Status.INCOMPATIBLE],
      ['another tokenizer', [encodeRequest(open([1], { tokenizerFingerprint: new Uint8Array(32) }))], Status.INCOMPATIBLE]
    ]
    for (const [what, messages, status] of cases) {
      it(what, async () => {
        await startService()
        const c = await connect()
        const lp = lpStream(c.stream)
        for (const m of messages) await lp.write(m)
        assert.equal(statusOf(await c.read()), status)
        await expertClosed(c)
        allFree()
      })
    }

    it('a second open on the same stream', async () => {
      await startService()
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      assert.equal(statusOf(await c.request(open())), Status.INVALID_REQUEST)
      await expertClosed(c)
      allFree()
    })
  })

  describe(`length prefixes (requests of at most ${MAX_REQUEST_BYTES} bytes)`, () => {
    it(`a request of exactly ${MAX_REQUEST_BYTES} bytes is served; a prefix one byte over is INVALID_REQUEST before any body`, async () => {
      await startService()
      // the Open, padded to exactly the limit with an unknown length-delimited field (ignored)
      const body = encodeRequest(open())
      const padLength = MAX_REQUEST_BYTES - body.byteLength - 1 - 3
      const padded = new Uint8Array(MAX_REQUEST_BYTES)
      padded.set(body)
      padded.set([0x7a, ...lengthPrefix(padLength)], body.byteLength)
      const atLimit = await connect()
      await lpStream(atLimit.stream).write(padded)
      assert.equal(decodeOpenResponse(await atLimit.read()).status, Status.OK, 'a request at the limit is served')
      atLimit.stream.abort(new Error('test done'))
      await atLimit.done

      const over = await connect()
      // only the prefix: the expert must not wait for a body it refuses
      over.stream.send(lengthPrefix(MAX_REQUEST_BYTES + 1))
      assert.equal(statusOf(await over.read()), Status.INVALID_REQUEST)
      await expertClosed(over)
      allFree()
    })

    it('a length prefix that never ends (continuation bits only) is INVALID_REQUEST at once, not read until the idle deadline', async () => {
      await startService()
      const c = await connect()
      c.stream.send(new Uint8Array(16).fill(0x80))
      assert.equal(statusOf(await c.read()), Status.INVALID_REQUEST)
      assert.equal(service.stats.sessionsEvicted, 0)
      await expertClosed(c)
    })
  })

  describe('a router that goes away', () => {
    it('resets mid-request (half a step after an open): its slot is freed, the per-peer count drops', async () => {
      await startService()
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      assert.equal(service.sessionsOf(alice.toString()), 1)
      const half = encodeRequest(step(ids(20)))
      c.stream.send(lengthPrefix(half.byteLength))
      c.stream.send(half.subarray(0, half.byteLength >> 1))
      c.stream.abort(new Error('router vanished mid-request'))
      await c.done
      allFree()
      assert.equal(service.stats.sessionsGone, 1)
    })

    it('resets during an evaluation: the KV sequence is freed only once that evaluation returns', async () => {
      await startService()
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      const g = gate()
      host.onEvaluate = async () => { await g.promise }
      await c.send(step([9]))
      await settle()
      const session = host.opened[0]
      assert.equal(session.evaluating, true)
      c.stream.abort(new Error('router vanished mid-evaluation'))
      await settle()
      assert.equal(session.closed, false, 'not freed under a running decode')
      assert.equal(service.sessionsOf(alice.toString()), 0, 'the per-peer quota counts it no more at once')
      g.open()
      await c.done
      allFree()
      assert.equal(service.stats.sessionsGone, 1)
    })

    it('closes its side after half an Open: the expert closes too and holds nothing', async () => {
      await startService()
      const c = await connect()
      const req = encodeRequest(open())
      c.stream.send(lengthPrefix(req.byteLength))
      c.stream.send(req.subarray(0, 4))
      await c.stream.close()
      await c.done
      await settle()
      assert.equal(c.stream.remoteWriteStatus, 'closed')
      assert.equal(host.opened.length, 0)
      allFree()
    })

    it('resets right after opening the stream', async () => {
      await startService()
      const c = await connect()
      c.stream.abort(new Error('router vanished'))
      await c.done
      allFree()
    })
  })

  describe('deadlines', () => {
    it('a session idle for idleTimeoutMs is evicted (INVALID_REQUEST) and the stream closed', async () => {
      await startService({ idleTimeoutMs: 30 })
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      await sleep(60)
      assert.equal(statusOf(await c.read()), Status.INVALID_REQUEST)
      await expertClosed(c)
      allFree()
      assert.equal(service.stats.sessionsEvicted, 1)
    })

    it('an evaluation past evalTimeoutMs (30 s by default, fake clock) is answered INTERNAL; the session is freed once the decode returns', async () => {
      await startService()
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      const g = gate()
      host.onEvaluate = async () => { await g.promise }
      mock.timers.enable({ apis: ['setTimeout'] })
      await c.send(step([9]))
      await settle()
      mock.timers.tick(29_999)
      await settle()
      assert.equal(c.stream.readBufferLength, 0, 'no answer before the deadline')
      mock.timers.tick(1)
      mock.timers.reset()
      assert.equal(statusOf(await c.read()), Status.INTERNAL)
      assert.equal(host.opened[0].closed, false, 'the decode still runs')
      g.open()
      await expertClosed(c)
      allFree()
    })

    it('a session lives maxSessionMs: a request exactly then is served, 1 ms later BUSY (fake clock)', async () => {
      mock.timers.enable({ apis: ['Date'], now: 1_000_000 })
      await startService({ maxSessionMs: 5_000 })
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      mock.timers.tick(5_000)
      assert.equal(statusOf(await c.request(step([9]))), Status.OK)
      mock.timers.tick(1)
      assert.equal(statusOf(await c.request(step([10]))), Status.BUSY)
      await expertClosed(c)
      allFree()
    })
  })

  describe('quotas at their bounds', () => {
    it(`sessions per peer (default ${DEFAULT_MAX_SESSIONS_PER_PEER}), no queue: exactly that many admitted, one more BUSY; another peer is admitted; a freed one is reusable`, async () => {
      await startService({ queueTimeoutMs: 0 })
      const held: Client[] = []
      for (let i = 0; i < DEFAULT_MAX_SESSIONS_PER_PEER; i++) {
        const c = await connect(alice)
        assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK, `session ${i + 1}`)
        held.push(c)
      }
      const extra = await connect(alice)
      assert.equal(statusOf(await extra.request(open())), Status.BUSY)
      await expertClosed(extra)
      assert.equal(service.sessionsOf(alice.toString()), DEFAULT_MAX_SESSIONS_PER_PEER)
      assert.equal(service.stats.sessionsRefusedPerPeer, 1)
      const other = await connect(bob)
      assert.equal(decodeOpenResponse(await other.request(open())).status, Status.OK)
      held.push(other)
      // one of alice's sessions ends: she may open one again
      held[0].stream.abort(new Error('done'))
      await held[0].done
      assert.equal(service.sessionsOf(alice.toString()), DEFAULT_MAX_SESSIONS_PER_PEER - 1)
      const again = await connect(alice)
      assert.equal(decodeOpenResponse(await again.request(open())).status, Status.OK)
      held.push(again)
      for (const c of held) c.stream.abort(new Error('done'))
      await Promise.all(held.map(async c => await c.done))
      allFree()
    })

    it('every slot of the host in use, no queue: the next open is BUSY (not a per-peer refusal)', async () => {
      await startService({ maxSessionsPerPeer: 8, queueTimeoutMs: 0 }, new FakeHost(CONTEXT, 2))
      const held = [await connect(), await connect()]
      for (const c of held) assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      const extra = await connect()
      assert.equal(statusOf(await extra.request(open())), Status.BUSY)
      assert.equal(service.stats.sessionsRefused, 1)
      assert.equal(service.stats.sessionsRefusedPerPeer, 0)
      await expertClosed(extra)
      for (const c of held) c.stream.abort(new Error('done'))
      await Promise.all(held.map(async c => await c.done))
      allFree()
    })

    it('the token budget, rolled-back tokens included: exactly maxSessionTokens served, one more CONTEXT_FULL', async () => {
      await startService({ maxSessionTokens: 20 })
      const c = await connect()
      // 3 + 4 draft = 7
      assert.equal(decodeOpenResponse(await c.request(open([1, 2, 3], { draft: ids(4) }))).status, Status.OK)
      for (let i = 0; i < 4; i++) await c.read()
      // twice: reject the whole draft, 1 token + 4 draft = 5 → 17
      for (let r = 0; r < 2; r++) {
        assert.equal(statusOf(await c.request(step([50 + r], { rollback: 4, draft: ids(4) }))), Status.OK)
        for (let i = 0; i < 4; i++) await c.read()
      }
      // 1 + 2 draft = 3 → exactly 20
      assert.equal(statusOf(await c.request(step([60], { rollback: 4, draft: ids(2) }))), Status.OK)
      for (let i = 0; i < 2; i++) await c.read()
      assert.equal(host.opened[0].evaluated, 20)
      assert.ok(host.opened[0].position < 20, 'the context holds far fewer')
      assert.equal(statusOf(await c.request(step([61], { rollback: 2 }))), Status.CONTEXT_FULL)
      await expertClosed(c)
      allFree()
    })

    it(`the context (${CONTEXT}): a prompt of ${CONTEXT - 2} tokens fits, ${CONTEXT - 1} is CONTEXT_FULL; a step past the context is CONTEXT_FULL`, async () => {
      await startService()
      const fits = await connect()
      assert.equal(decodeOpenResponse(await fits.request(open(Array.from(ids(CONTEXT - 2))))).status, Status.OK)
      assert.equal(statusOf(await fits.request(step([1]))), Status.OK, `position ${CONTEXT - 1}: the last one`)
      assert.equal(statusOf(await fits.request(step([2]))), Status.CONTEXT_FULL)
      await expertClosed(fits)
      const over = await connect()
      assert.equal(statusOf(await over.request(open(Array.from(ids(CONTEXT - 1))))), Status.CONTEXT_FULL)
      await expertClosed(over)
      allFree()
    })

    it('a rollback into the context before the session (≥ its position) is INVALID_REQUEST', async () => {
      await startService()
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open([1, 2, 3]))).status, Status.OK)
      assert.equal(statusOf(await c.request(step([4], { rollback: 3 }))), Status.INVALID_REQUEST)
      await expertClosed(c)
      allFree()
    })
  })

  describe('a full expert queues opens (SlotQueue)', () => {
    /** sends an open and waits until the service has it in its queue */
    async function queuedOpen (peer: PeerId): Promise<Client> {
      const before = service.queued
      const c = await connect(peer)
      await c.send(open())
      for (let i = 0; i < 50 && service.queued === before; i++) await sleep(5)
      assert.equal(service.queued, before + 1, 'the open waits in the queue')
      return c
    }
    async function end (c: Client): Promise<void> {
      c.stream.abort(new Error('done'))
      await c.done
    }

    it('every slot in use: opens wait and are admitted as sessions end, earliest first', async () => {
      await startService({ maxSessionsPerPeer: 8 }, new FakeHost(CONTEXT, 1))
      const holder = await connect(alice)
      assert.equal(decodeOpenResponse(await holder.request(open())).status, Status.OK)
      const first = await queuedOpen(bob)
      const second = await queuedOpen(alice)
      await end(holder)
      assert.equal(decodeOpenResponse(await first.read()).status, Status.OK, 'the earliest waiter gets the freed slot')
      assert.equal(service.queued, 1, 'the later one still waits')
      await end(first)
      assert.equal(decodeOpenResponse(await second.read()).status, Status.OK)
      assert.equal(service.stats.sessionsQueued, 2)
      assert.equal(service.stats.sessionsAdmittedAfterWait, 2)
      assert.equal(service.stats.sessionsRefused, 0)
      await end(second)
      allFree()
    })

    it(`a peer beyond its quota (${DEFAULT_MAX_SESSIONS_PER_PEER}) borrows idle slots; another peer's waiting Open ends the newest borrowed session (BUSY) and takes its slot; beyond its own quota it waits`, async () => {
      await startService()
      const alices: Client[] = []
      for (let i = 0; i < 4; i++) {
        const c = await connect(alice)
        assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK, `alice's session ${i + 1} of 4 (the slots are idle)`)
        alices.push(c)
      }
      assert.equal(service.stats.sessionsBorrowed, 4 - DEFAULT_MAX_SESSIONS_PER_PEER)
      for (let i = 0; i < DEFAULT_MAX_SESSIONS_PER_PEER; i++) {
        const b = await connect(bob)
        await b.send(open())
        assert.equal(statusOf(await alices[3 - i].read()), Status.BUSY, `alice's newest borrowed session (${4 - i}) gives its slot back`)
        assert.equal(decodeOpenResponse(await b.read()).status, Status.OK, `bob's session ${i + 1}`)
        alices.push(b)
        await alices[3 - i].done
      }
      assert.equal(service.stats.sessionsPreempted, DEFAULT_MAX_SESSIONS_PER_PEER)
      assert.equal(service.sessionsOf(alice.toString()), DEFAULT_MAX_SESSIONS_PER_PEER, 'alice keeps her quota')
      // bob at his quota, no slot idle: his next Open waits (it ends nobody's session) ...
      const third = await queuedOpen(bob)
      assert.equal(service.stats.sessionsPreempted, DEFAULT_MAX_SESSIONS_PER_PEER)
      // ... until a slot frees
      await end(alices[0])
      assert.equal(decodeOpenResponse(await third.read()).status, Status.OK)
      for (const c of [alices[1], ...alices.slice(4), third]) await end(c)
      allFree()
    })

    it('at its bounds: maxQueuedPerPeer opens of one peer wait, one more is BUSY at once; maxQueued in all, one more BUSY at once', async () => {
      await startService({ maxSessionsPerPeer: 8, maxQueued: 3, maxQueuedPerPeer: 2 }, new FakeHost(CONTEXT, 1))
      const holder = await connect(alice)
      assert.equal(decodeOpenResponse(await holder.request(open())).status, Status.OK)
      const waiting = [await queuedOpen(alice), await queuedOpen(alice)]
      const t0 = performance.now()
      const third = await connect(alice)
      assert.equal(statusOf(await third.request(open())), Status.BUSY, `open ${2 + 1} of one peer`)
      waiting.push(await queuedOpen(bob))
      const over = await connect(bob)
      assert.equal(statusOf(await over.request(open())), Status.BUSY, 'open 3 + 1 in all')
      assert.ok(performance.now() - t0 < 2_000, 'refused at once, not after the queue timeout')
      assert.equal(service.stats.sessionsRefused, 2)
      assert.equal(service.queued, 3)
      await expertClosed(third)
      await expertClosed(over)
      for (const c of [holder, ...waiting]) await end(c)
      assert.equal(service.queued, 0)
      allFree()
    })

    it('no slot frees within queueTimeoutMs: BUSY, and the waiter is gone from the queue', async () => {
      await startService({ maxSessionsPerPeer: 8, queueTimeoutMs: 200 }, new FakeHost(CONTEXT, 1))
      const holder = await connect(alice)
      assert.equal(decodeOpenResponse(await holder.request(open())).status, Status.OK)
      const t0 = performance.now()
      const late = await queuedOpen(bob)
      assert.equal(statusOf(await late.read()), Status.BUSY)
      assert.ok(performance.now() - t0 >= 150, 'answered after the wait')
      assert.equal(service.queued, 0)
      assert.equal(service.stats.sessionsRefused, 1)
      await expertClosed(late)
      await end(holder)
      allFree()
    })

    it('a router that goes away while it waits leaves the queue and never takes a slot', async () => {
      await startService({ maxSessionsPerPeer: 8 }, new FakeHost(CONTEXT, 1))
      const holder = await connect(alice)
      assert.equal(decodeOpenResponse(await holder.request(open())).status, Status.OK)
      const gone = await queuedOpen(bob)
      await end(gone)
      assert.equal(service.queued, 0)
      await end(holder)
      await settle()
      assert.equal(host.opened.length, 1, 'the vanished router was never given a session')
      allFree()
    })

    it('a HALT while an open waits: HALTED, the waiter gone', async () => {
      await startService({ maxSessionsPerPeer: 8 }, new FakeHost(CONTEXT, 1))
      const holder = await connect(alice)
      assert.equal(decodeOpenResponse(await holder.request(open())).status, Status.OK)
      const waiting = await queuedOpen(bob)
      service.haltAll('test')
      assert.equal(statusOf(await waiting.read()), Status.HALTED)
      assert.equal(statusOf(await holder.request(step([9]))), Status.HALTED)
      assert.equal(service.queued, 0)
      await expertClosed(waiting)
      await expertClosed(holder)
      allFree()
    })
  })

  describe('HALT', () => {
    const ENVELOPE = Uint8Array.from([1, 2, 3, 4])

    it('haltAll during a step: the step is answered HALTED with the envelope, never one more frame', async () => {
      await startService({ haltEnvelope: () => ENVELOPE })
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      const g = gate()
      host.onEvaluate = async () => { await g.promise }
      await c.send(step([9], { draft: ids(3) }))
      await settle()
      service.haltAll('test')
      const res = decodeFrameResponse(await c.read())
      assert.equal(res.status, Status.HALTED)
      assert.deepEqual(res.status === Status.HALTED ? res.haltEnvelope : undefined, ENVELOPE)
      g.open()
      await expertClosed(c)
      assert.equal(c.stream.readBufferLength, 0, 'no frame after HALTED')
      allFree()
    })

    it('haltAll during a rollback: HALTED, no frame', async () => {
      await startService()
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open([1, 2, 3], { draft: ids(2) }))).status, Status.OK)
      for (let i = 0; i < 2; i++) await c.read()
      host.onRollback = () => { service.haltAll('halt during a rollback') }
      assert.equal(statusOf(await c.request(step([3], { rollback: 2 }))), Status.HALTED)
      await expertClosed(c)
      assert.equal(host.opened[0].position, 5 - 2, 'rolled back, nothing evaluated after the HALT')
      allFree()
    })

    it('while halted (haltReason), every request is HALTED, an open included', async () => {
      let reason: string | undefined
      await startService({ haltReason: () => reason })
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      reason = 'governance'
      assert.equal(statusOf(await c.request(step([9]))), Status.HALTED)
      await expertClosed(c)
      const d = await connect()
      assert.equal(statusOf(await d.request(open())), Status.HALTED)
      await expertClosed(d)
      allFree()
    })
  })

  it('pipelined speculative rounds (ExpertSession): written before the first is answered, frames in order, a later round rolls back what it does not share', async () => {
    await startService()
    const { stream } = await dial(registrar, INFER_PROTOCOL, alice)
    const session = ExpertSession.local(alice, stream)
    const u = (xs: number[]): Uint32Array => Uint32Array.from(xs)
    const positions = (fs: Frame[]): number[] => fs.map(f => f.position)
    // a round opens the session: context of 3, two draft tokens → positions 3, 4, 5
    assert.deepEqual(positions(await session.speculate(u([1, 2, 3]), u([10, 11]), FINGERPRINT)), [3, 4, 5])
    const [fake] = host.opened
    // the expert holds its next evaluation until the test opens the gate
    const held = gate()
    let evaluations = 0
    host.onEvaluate = async () => { if (evaluations++ === 0) await held.promise }
    // two more rounds, the second assuming the first's draft and a guessed token (50, then 51) were accepted
    const second = session.speculate(u([1, 2, 3, 10, 11, 50]), u([12, 13]), FINGERPRINT)
    const third = session.speculate(u([1, 2, 3, 10, 11, 50, 12, 13, 51]), u([14]), FINGERPRINT)
    const sent = session.bytesSent
    await settle()
    assert.ok(session.bytesSent > sent, 'the later round is on the wire while the expert still evaluates the earlier one')
    held.open()
    assert.deepEqual(positions(await second), [6, 7, 8])
    assert.deepEqual(positions(await third), [9, 10])
    assert.equal(fake.position, 10, 'every pipelined round was evaluated after the one before it')
    // the second round's token 12 was rejected: the next round rolls back everything after [1, 2, 3, 10, 11, 50]
    assert.deepEqual(positions(await session.speculate(u([1, 2, 3, 10, 11, 50, 60]), u([15]), FINGERPRINT)), [7, 8])
    assert.equal(fake.position, 8)
    assert.deepEqual(session.kv, [1, 2, 3, 10, 11, 50, 60, 15])
    await session.close()
    await settle()
    allFree()
  })

  it('requests on one session leave no abort listener behind: as many with 24 steps as with 2', async () => {
    await startService()
    const run = async (steps: number): Promise<number> => await abortListenersLeft(async () => {
      const c = await connect()
      assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
      for (let i = 0; i < steps; i++) assert.equal(statusOf(await c.request(step([20 + i]))), Status.OK)
      await c.send({ type: 'close' })
      await expertClosed(c)
    })
    const few = await run(2)
    const many = await run(24)
    assert.equal(many, few, `${many} listeners after 24 steps, ${few} after 2`)
    allFree()
  })

  it('stop() aborts every live session', async () => {
    await startService()
    const c = await connect()
    assert.equal(decodeOpenResponse(await c.request(open())).status, Status.OK)
    await service.stop()
    await c.done
    assert.equal(c.stream.status, 'reset')
    allFree()
  })
})
