/**
 * GenerateService (/meshllm/generate/1.0.0, the routing peer's side) over in-memory stream
 * pairs from @libp2p/utils, with a scripted fake router behind GenerateServiceInit.router:
 * the protocol's edge cases at their bounds without a process, a node or a model (the same
 * promises test/adversarial/streams.spec.ts and quotas.spec.ts check end to end).
 *
 * Deadlines: every deadline of this service is an AbortSignal.timeout, which no fake-timer
 * library fakes (sinon is not a dependency; Node's MockTimers do not cover it): the deadline
 * tests configure short real ones through GenerateServiceInit instead.
 */
import assert from 'node:assert/strict'
import { defaultLogger } from '@libp2p/logger'
import { pbStream } from '@libp2p/utils'
import type { PeerId, Stream, StreamCloseEvent } from '@libp2p/interface'
import {
  GenerateService, DEFAULT_MAX_REMOTE_K, DEFAULT_MAX_STREAMS_PER_PEER, GENERATE_PROTOCOL, MAX_QUEUED_EVENTS, type GenerateServiceInit
} from '../../src/router/generate-service.js'
import { GenerateEvent, GenerateRequest } from '../../src/router/pb/generate.js'
import type { GenerateOptions, GenerateResult } from '../../src/router/router.js'
import { HaltedError } from '../../src/util/errors.js'
import { dial, fakeRegistrar, lengthPrefix, newPeerId, settle, sleep, type FakeRegistrar } from '../helpers/service-harness.js'

const REQUEST: GenerateRequest = { prompt: 'The kernel', k: 1, maxTokens: 3, temperature: 0.8, topK: 0, topP: 0.95, seed: 11n, hasSeed: true, stop: [], rule: 'mixture' }

function result (tokens: number, opts: GenerateOptions): GenerateResult {
  const tokenIds = Array.from({ length: tokens }, (_, i) => 100 + i)
  return {
    text: tokenIds.map(t => `<${t}>`).join(''),
    tokens,
    tokenIds,
    promptTokens: 2,
    elapsedMs: 1,
    tokensPerSecond: 1000,
    k: opts.k ?? 3,
    effectiveK: opts.k ?? 3,
    experts: ['expert-a'],
    bytesPerExpertToken: 10,
    finishReason: 'length',
    steps: [],
    warnings: []
  }
}

type Script = (prompt: string, opts: GenerateOptions) => Promise<GenerateResult>

/** a router that plays a script; by default `maxTokens` tokens, one per macrotask, honouring the signal */
class FakeRouter {
  readonly calls: Array<{ prompt: string, opts: GenerateOptions }> = []
  script: Script = async (_prompt, opts) => {
    const n = opts.maxTokens ?? 1
    for (let i = 0; i < n; i++) {
      await new Promise(resolve => setImmediate(resolve))
      opts.signal?.throwIfAborted()
      opts.onToken?.({ token: 100 + i, text: `<${100 + i}>`, experts: ['expert-a'], index: i })
    }
    return result(n, opts)
  }

  async generate (prompt: string | number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    this.calls.push({ prompt: String(prompt), opts })
    return await this.script(String(prompt), opts)
  }
}

/** a generation that waits until the test lets it end (or its signal aborts) */
function held (router: FakeRouter): { release: () => void } {
  let release!: () => void
  const released = new Promise<void>(resolve => { release = resolve })
  router.script = async (_prompt, opts) => {
    opts.onToken?.({ token: 1, text: 'a', experts: [], index: 0 })
    await new Promise<void>((resolve, reject) => {
      void released.then(resolve)
      opts.signal?.addEventListener('abort', () => { reject(opts.signal?.reason) }, { once: true })
    })
    return result(1, opts)
  }
  return { release }
}

interface Client {
  stream: Stream
  server: Stream
  done: Promise<void>
  closeListenersBefore: number
  /** the error the handler aborted its end with, by name (undefined: closed cleanly or still open) */
  serverAbort: () => string | undefined
  send: (r?: Partial<GenerateRequest>) => Promise<void>
  next: () => Promise<GenerateEvent>
  /** every event until the generation's last (done or error) */
  all: () => Promise<GenerateEvent[]>
}

describe('GenerateService over in-memory streams (fake router)', function () {
  this.timeout(5_000)
  let alice: PeerId, bob: PeerId
  let router: FakeRouter
  let registrar: FakeRegistrar
  let service: GenerateService

  before(async () => { [alice, bob] = await Promise.all([newPeerId(), newPeerId()]) })

  async function startService (init: Partial<GenerateServiceInit> = {}): Promise<void> {
    router = new FakeRouter()
    registrar = fakeRegistrar()
    service = new GenerateService({ registrar, logger: defaultLogger() }, { router: () => router, ...init })
    await service.start()
  }

  afterEach(async () => {
    if (service?.isStarted()) await service.stop()
  })

  async function connect (peer: PeerId = alice): Promise<Client> {
    const { stream, server, done, closeListenersBefore } = await dial(registrar, GENERATE_PROTOCOL, peer)
    let aborted: string | undefined
    server.addEventListener('close', (evt: StreamCloseEvent) => { aborted = evt.error?.name }, { once: true })
    const pb = pbStream(stream, { maxDataLength: 64 * 1024 })
    const next = async (): Promise<GenerateEvent> => await pb.read(GenerateEvent, { signal: AbortSignal.timeout(1_000) })
    return {
      stream,
      server,
      done,
      // the listener just added is ours, not the handler's
      closeListenersBefore: closeListenersBefore + 1,
      serverAbort: () => aborted,
      send: async (r = {}) => { await pb.write({ ...REQUEST, ...r }, GenerateRequest, { signal: AbortSignal.timeout(1_000) }) },
      next,
      all: async () => {
        const events: GenerateEvent[] = []
        while (true) {
          const ev = await next()
          events.push(ev)
          if (ev.token == null) return events
        }
      }
    }
  }

  /** the last event of `c`'s generation (done or error) */
  async function last (c: Client): Promise<GenerateEvent> {
    const events = await c.all()
    return events[events.length - 1]
  }

  /** the handler ended with its side closed cleanly, no listener left on the stream, no slot held */
  async function endedCleanly (c: Client): Promise<void> {
    await c.done
    await settle()
    assert.equal(c.stream.remoteWriteStatus, 'closed', 'the peer closed its side')
    assert.equal(c.serverAbort(), undefined, 'not aborted')
    assert.equal(c.server.listenerCount('close'), c.closeListenersBefore + 1, "only lpStream's own 'close' listener remains (streamLifetime's is removed)")
    c.stream.abort(new Error('test done'))
    assert.equal(service.active, 0)
  }

  /** the handler aborted the stream with an error named `name`; the client sees a reset */
  async function aborted (c: Client, name: string): Promise<void> {
    await c.done
    await settle()
    assert.equal(c.serverAbort(), name)
    assert.equal(c.stream.status, 'reset')
    assert.equal(service.active, 0)
  }

  it('registers the handler with stream limits; unregisters on stop', async () => {
    await startService()
    assert.equal(registrar.handlers.get(GENERATE_PROTOCOL)?.options?.maxInboundStreams, 16)
    await service.stop()
    assert.equal(registrar.handlers.size, 0)
  })

  it('a well-formed request: one token event per token, in order, then Done; the stream closed', async () => {
    await startService()
    const c = await connect()
    await c.send()
    const events = await c.all()
    assert.deepEqual(events.slice(0, -1).map(e => e.token?.id), [100, 101, 102])
    const done = events[events.length - 1].done
    assert.equal(done?.tokens, 3)
    assert.equal(done?.text, '<100><101><102>')
    assert.equal(done?.finishReason, 'length')
    assert.equal(router.calls[0].prompt, REQUEST.prompt)
    assert.equal(router.calls[0].opts.seed, 11)
    await endedCleanly(c)
    assert.equal(service.stats.admitted, 1)
  })

  describe('requests out of range: named error events, the router never runs', () => {
    it(`k: ${DEFAULT_MAX_REMOTE_K} runs, ${DEFAULT_MAX_REMOTE_K + 1} is InvalidGenerateRequestError; the limit is the service's (maxK 3: 4 refused)`, async () => {
      await startService()
      const ok = await connect()
      await ok.send({ k: DEFAULT_MAX_REMOTE_K })
      assert.ok((await last(ok)).done != null)
      await endedCleanly(ok)
      const over = await connect()
      await over.send({ k: DEFAULT_MAX_REMOTE_K + 1 })
      assert.equal((await over.next()).error?.name, 'InvalidGenerateRequestError')
      await endedCleanly(over)
      assert.equal(router.calls.length, 1)
      await service.stop()

      await startService({ maxK: 3 })
      const three = await connect()
      await three.send({ k: 3 })
      assert.ok((await last(three)).done != null)
      const four = await connect()
      await four.send({ k: 4 })
      assert.equal((await four.next()).error?.name, 'InvalidGenerateRequestError')
      await endedCleanly(four)
    })

    it('max_tokens: the limit runs, one more is InvalidGenerateOptionError; an empty prompt is InvalidGenerateRequestError', async () => {
      await startService({ maxTokens: 5 })
      const ok = await connect()
      await ok.send({ maxTokens: 5 })
      assert.equal((await last(ok)).done?.tokens, 5)
      const over = await connect()
      await over.send({ maxTokens: 6 })
      assert.equal((await over.next()).error?.name, 'InvalidGenerateOptionError')
      await endedCleanly(over)
      const empty = await connect()
      await empty.send({ prompt: '' })
      assert.equal((await empty.next()).error?.name, 'InvalidGenerateRequestError')
      await endedCleanly(empty)
      assert.equal(router.calls.length, 1)
    })
  })

  describe('malformed requests: the stream is aborted, the error named', () => {
    it('protobuf garbage', async () => {
      await startService()
      const c = await connect()
      c.stream.send(Uint8Array.from([3, 0xff, 0xff, 0xff]))
      await aborted(c, 'RangeError')
      assert.equal(router.calls.length, 0)
    })

    it('a length prefix over 64 KiB, before its body', async () => {
      await startService()
      const c = await connect()
      c.stream.send(lengthPrefix(64 * 1024 + 1))
      await aborted(c, 'InvalidDataLengthError')
    })

    it('a length prefix that never ends (continuation bits only): at once, not at the request deadline', async () => {
      await startService()
      const c = await connect()
      c.stream.send(new Uint8Array(16).fill(0x80))
      await Promise.race([c.done, sleep(1_000).then(() => { throw new Error('still reading the prefix after 1 s') })])
      await aborted(c, 'InvalidDataLengthLengthError')
    })
  })

  it(`generations per peer (default ${DEFAULT_MAX_STREAMS_PER_PEER}): exactly that many run, one more is TooManyGenerationsError; another peer runs; a finished one frees its place`, async () => {
    await startService()
    const gen = held(router)
    const running: Client[] = []
    for (let i = 0; i < DEFAULT_MAX_STREAMS_PER_PEER; i++) {
      const c = await connect(alice)
      await c.send()
      assert.ok((await c.next()).token != null, `generation ${i + 1} runs`)
      running.push(c)
    }
    const refused = await connect(alice)
    assert.equal((await refused.next()).error?.name, 'TooManyGenerationsError', 'answered before it even sends a request')
    await refused.done
    assert.equal(service.stats.refusedBusy, 1)
    const other = await connect(bob)
    await other.send()
    assert.ok((await other.next()).token != null)
    assert.equal(service.active, DEFAULT_MAX_STREAMS_PER_PEER + 1)
    gen.release()
    for (const c of [...running, other]) assert.ok((await last(c)).done != null)
    await Promise.all([...running, other].map(async c => { await endedCleanly(c) }))
    const again = await connect(alice)
    await again.send()
    assert.ok((await last(again)).done != null)
    await endedCleanly(again)
  })

  describe('a routed-generation token', () => {
    const TOKEN = 'routed-generation-secret'

    it('none or a wrong one is GenerateUnauthorizedError (the router never runs); the right one runs', async () => {
      await startService({ token: TOKEN })
      for (const token of [undefined, `${TOKEN}x`, '']) {
        const c = await connect()
        await c.send(token != null ? { token } : {})
        assert.equal((await c.next()).error?.name, 'GenerateUnauthorizedError', `token ${JSON.stringify(token)}`)
        await endedCleanly(c)
      }
      assert.equal(service.stats.refusedToken, 3)
      assert.equal(router.calls.length, 0)
      const c = await connect()
      await c.send({ token: TOKEN })
      assert.ok((await last(c)).done != null)
      await endedCleanly(c)
    })

    it('an empty token cannot be configured (GenerateTokenFileError)', () => {
      assert.throws(() => new GenerateService({ registrar: fakeRegistrar(), logger: defaultLogger() }, { router: () => undefined, token: '' }), { name: 'GenerateTokenFileError' })
    })
  })

  it('a peer that does not route answers NoExpertsError; a router failure is sent by its name (HaltedError)', async () => {
    await startService({ router: () => undefined })
    const c = await connect()
    await c.send()
    assert.equal((await c.next()).error?.name, 'NoExpertsError')
    await endedCleanly(c)
    await service.stop()

    await startService()
    router.script = async (_p, opts) => {
      opts.onToken?.({ token: 1, text: 'a', experts: [], index: 0 })
      throw new HaltedError('halted by governance')
    }
    const h = await connect()
    await h.send()
    const events = await h.all()
    assert.equal(events[0].token?.id, 1)
    assert.equal(events[1].error?.name, 'HaltedError')
    await endedCleanly(h)
  })

  describe('a client that goes away', () => {
    it('closes its side after half a request: the handler aborts the stream, holds no place, the router never runs', async () => {
      await startService()
      const c = await connect()
      const req = GenerateRequest.encode(REQUEST)
      c.stream.send(lengthPrefix(req.byteLength))
      c.stream.send(req.subarray(0, req.byteLength >> 1))
      await c.stream.close()
      await aborted(c, 'UnexpectedEOFError')
      assert.equal(router.calls.length, 0)
    })

    it('resets mid-generation: the router\'s signal aborts (StreamGoneError), the place is freed, the client counted gone', async () => {
      await startService()
      held(router)
      const c = await connect()
      await c.send()
      assert.ok((await c.next()).token != null)
      assert.equal(service.active, 1)
      c.stream.abort(new Error('client vanished'))
      await c.done
      assert.equal(router.calls[0].opts.signal?.aborted, true)
      assert.equal((router.calls[0].opts.signal?.reason as Error).name, 'StreamGoneError')
      assert.equal(service.active, 0)
      assert.equal(service.stats.clientGone, 1)
    })

    it('resets right after opening the stream', async () => {
      await startService()
      const c = await connect()
      c.stream.abort(new Error('client vanished'))
      await c.done
      assert.equal(service.active, 0)
      assert.equal(router.calls.length, 0)
    })
  })

  describe('deadlines and slow clients', () => {
    it('no request within requestTimeoutMs: the stream is reset', async () => {
      await startService({ requestTimeoutMs: 30 })
      const c = await connect()
      await sleep(60)
      await aborted(c, 'TimeoutError')
      assert.equal(router.calls.length, 0)
    })

    it('a generation past timeoutMs: the router\'s signal aborts, the client gets the error by name, then a clean close', async () => {
      await startService({ timeoutMs: 100 })
      held(router)
      const c = await connect()
      await c.send()
      assert.ok((await c.next()).token != null)
      const ev = await c.next()
      assert.equal(ev.error?.name, 'TimeoutError')
      assert.equal(router.calls[0].opts.signal?.aborted, true)
      await endedCleanly(c)
    })

    it(`${MAX_QUEUED_EVENTS} token events unwritten at once are queued; one more drops the client (SlowClientError)`, async () => {
      await startService({ maxTokens: 2048 })
      const burst = (n: number): void => {
        router.script = async (_p, opts) => {
          for (let i = 0; i < n; i++) opts.onToken?.({ token: i, text: '', experts: [], index: i })
          await new Promise(resolve => setImmediate(resolve))
          opts.signal?.throwIfAborted()
          return result(n, opts)
        }
      }
      burst(MAX_QUEUED_EVENTS)
      const ok = await connect()
      await ok.send()
      const events = await ok.all()
      assert.equal(events.length, MAX_QUEUED_EVENTS + 1)
      assert.ok(events[MAX_QUEUED_EVENTS].done != null)
      await endedCleanly(ok)

      burst(MAX_QUEUED_EVENTS + 1)
      const slow = await connect()
      await slow.send()
      await aborted(slow, 'SlowClientError')
      assert.equal(service.stats.clientGone, 1)
    })

    it('a client that stops reading is dropped after writeTimeoutMs (SlowClientError)', async () => {
      await startService({ writeTimeoutMs: 30 })
      const c = await connect()
      await c.send()
      // the transport is full and never drains: what yamux reports once a client that stopped
      // reading has used up its receive window (the mock muxer does not model a window)
      const server = c.server as Stream & { sendData: (data: unknown) => { sentBytes: number, canSendMore: boolean } }
      const sendData = server.sendData.bind(server)
      server.sendData = (data: any) => ({ ...sendData(data), canSendMore: false })
      await Promise.race([c.done, sleep(1_000).then(() => { throw new Error('still writing after 1 s') })])
      await aborted(c, 'SlowClientError')
      assert.equal(router.calls[0].opts.signal?.aborted, true, 'the generation stopped')
      assert.equal(service.stats.clientGone, 1)
    })
  })
})
