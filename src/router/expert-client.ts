/** Router side of one /meshllm/infer/1.0.0 session with one expert. */
import type { AbortOptions, PeerId, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { MeshNode } from '../node/node.js'
import { INFER_PROTOCOL, INFER_PROTOCOL_VERSION, MAX_RESPONSE_BYTES, Status, type Frame, type OpenInfo } from '../wire/types.js'
import { decodeFrameResponse, decodeOpenResponse, encodeRequest } from '../wire/infer-codec.js'
import { ExpertError, asError } from '../util/errors.js'
import { lengthPrefixOptions } from '../wire/length-prefix.js'
import type { FrameEncoding } from '../wire/frame.js'
import { connectionFor, isCircuit, isPublicAddress, streamTo } from '../node/reach.js'

/**
 * An expert answered HALTED. Its word alone halts nothing (only the router's own verified
 * governance state may say "halted", src/router/router.ts): `envelope` is the signed HALT it
 * sent along, unverified, for the router's governance to check.
 */
export class ExpertHaltedError extends Error {
  static override name = 'ExpertHaltedError'
  override name = 'ExpertHaltedError'
  constructor (message: string, readonly envelope?: Uint8Array) { super(message) }
}

/** open(): teacher forcing and prompt scoring (see open) */
export interface OpenOptions extends AbortOptions {
  target?: number
  scorePrompt?: boolean
}

/** step(): teacher forcing (see open) */
export interface StepOptions extends AbortOptions {
  target?: number
}

/** speculate(): prompt scoring when the round opens the session */
export interface SpeculateOptions extends AbortOptions {
  scorePrompt?: boolean
}

/** ExpertSession.connect / local: how the router asks the expert to write frames */
export interface SessionOptions extends AbortOptions {
  /**
   * 'compact' (default): ask for compact frames, one byte per logprob at a per-frame step
   * (≈ 600 instead of ≈ 870 bytes per 256-entry frame; protocols/infer.md §5); an expert that
   * predates them sends full ones, which are read alike. 'full': uint16 logprobs (1/1024 nat).
   */
  frames?: FrameEncoding
}

function varintLength (n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4
}

export class ExpertSession {
  /** context tokens the expert has evaluated */
  synced = 0
  /** tokens in the expert's KV cache, as far as this router knows (speculative mode: may end in rejected drafts) */
  kv: number[] = []
  bytesSent = 0
  bytesReceived = 0
  frames = 0
  info?: OpenInfo
  private closed = false
  /** an open is in flight (speculate): no round may be pipelined behind it */
  private opening = false
  /** the last pipelined request's write and frame reads: the next one's go after them */
  private writes: Promise<unknown> = Promise.resolve()
  private reads: Promise<unknown> = Promise.resolve()

  /**
   * @param local the session runs over an in-process stream to this node's own expert
   * (InferService.openLocal): its bytes never cross a network
   */
  private constructor (readonly peerId: PeerId, private readonly stream: Stream, private readonly lp: LengthPrefixedStream<Stream>, readonly local = false, readonly encoding: FrameEncoding = 'compact') {}

  /** a session over an in-process /meshllm/infer stream to this node's own expert (InferService.openLocal) */
  static local (peerId: PeerId, stream: Stream, options: SessionOptions = {}): ExpertSession {
    return new ExpertSession(peerId, stream, lpStream(stream, lengthPrefixOptions(MAX_RESPONSE_BYTES)), true, options.frames)
  }

  static async connect (node: MeshNode, peerId: PeerId, options: SessionOptions = {}): Promise<ExpertSession> {
    const { signal } = options
    let stream: Stream
    try {
      stream = await openInferStream(node, peerId, signal)
    } catch (err) {
      if (signal?.aborted === true) throw err
      // the expert may have restarted on new addresses (same peer id, e.g. a persistent
      // --data-dir): the known ones are stale, so ask the DHT (not the local cache) once, with
      // a short bound, and retry on the addresses it returns
      const info = await node.peerRouting.findPeer(peerId, { signal: AbortSignal.any([...(signal != null ? [signal] : []), AbortSignal.timeout(5_000)]), useCache: false }).catch(() => undefined)
      if (info == null || info.multiaddrs.length === 0) throw err
      await node.peerStore.merge(peerId, { multiaddrs: info.multiaddrs }).catch(() => {})
      stream = await node.dialProtocol(info.multiaddrs, INFER_PROTOCOL, { signal, runOnLimitedConnection: true })
    }
    return new ExpertSession(peerId, stream, lpStream(stream, lengthPrefixOptions(MAX_RESPONSE_BYTES)), false, options.frames)
  }

  private async request (bytes: Uint8Array, options: AbortOptions): Promise<Uint8Array> {
    this.bytesSent += bytes.byteLength + varintLength(bytes.byteLength)
    await this.lp.write(bytes, options)
    const res = await this.lp.read(options)
    this.bytesReceived += res.byteLength + varintLength(res.byteLength)
    return res.subarray()
  }

  /**
   * Opens the session with the full context; returns the frame for the next position.
   * opts.target (teacher forcing): the known next token, whose exact logprob the frame then
   * carries (Frame.targetLogprob, when the expert can compute it); opts.scorePrompt: ask for
   * the prompt's log-likelihood (this.info.promptLogprob / promptScored, when supported).
   */
  async open (tokens: Uint32Array, fingerprint: Uint8Array, opts: OpenOptions = {}): Promise<Frame> {
    const res = decodeOpenResponse(await this.request(encodeRequest({
      type: 'open',
      protocolVersion: INFER_PROTOCOL_VERSION,
      tokenizerFingerprint: fingerprint,
      tokens,
      topK: 256,
      ...(opts.target !== undefined ? { target: opts.target } : {}),
      ...(opts.scorePrompt === true ? { scorePrompt: true } : {}),
      ...(this.encoding === 'compact' ? { compactFrames: true } : {})
    }), opts))
    if (res.status !== Status.OK) throw statusError(res)
    this.info = res.open
    this.synced = tokens.length
    this.kv = Array.from(tokens)
    this.frames++
    return res.open.frame
  }

  /**
   * Sends the tokens the expert has not seen yet (catch-up is one batch); returns the next
   * frame. opts.target: see open().
   */
  async step (tokens: Uint32Array, opts: StepOptions = {}): Promise<Frame> {
    const res = decodeFrameResponse(await this.request(encodeRequest({ type: 'step', tokens, ...(opts.target !== undefined ? { target: opts.target } : {}) }), opts))
    if (res.status !== Status.OK) throw statusError(res)
    this.synced += tokens.length
    this.kv.push(...tokens)
    this.frames++
    return res.frame
  }

  private async readFrame (options: AbortOptions): Promise<Frame> {
    const raw = await this.lp.read(options)
    this.bytesReceived += raw.byteLength + varintLength(raw.byteLength)
    const res = decodeFrameResponse(raw.subarray())
    if (res.status !== Status.OK) throw statusError(res)
    return res.frame
  }

  /**
   * Speculative round: brings the expert to `context` (rolling back tokens it evaluated that
   * are not a prefix of it, i.e. rejected drafts), then evaluates `draft` after it in the
   * same batch. Returns draft.length + 1 frames: after the context, then after each draft
   * token. Opens the session on first use.
   *
   * Rounds may be pipelined once the session is open: a call made while earlier ones are in
   * flight is written at once and assumes their drafts are in the expert's KV cache (it rolls
   * back what its context does not share with them); the expert answers requests in order, so
   * each call reads its frames after the earlier calls have read theirs. A caller that no
   * longer wants an earlier round's frames still lets it read them (aborting one read breaks
   * the stream for every later round).
   */
  async speculate (context: Uint32Array, draft: Uint32Array, fingerprint: Uint8Array, opts: SpeculateOptions = {}): Promise<Frame[]> {
    if (this.info == null) {
      if (this.opening) throw new Error('the session is still opening: a pipelined round needs an open session')
      this.opening = true
      try {
        const req = encodeRequest({ type: 'open', protocolVersion: INFER_PROTOCOL_VERSION, tokenizerFingerprint: fingerprint, tokens: context, topK: 256, draft, ...(opts.scorePrompt === true ? { scorePrompt: true } : {}), ...(this.encoding === 'compact' ? { compactFrames: true } : {}) })
        const res = decodeOpenResponse(await this.request(req, opts))
        if (res.status !== Status.OK) throw statusError(res)
        this.info = res.open
        const frames = [res.open.frame]
        for (let i = 0; i < draft.length; i++) frames.push(await this.readFrame(opts))
        this.kv = [...context, ...draft]
        this.synced = context.length
        this.frames += frames.length
        return frames
      } finally {
        this.opening = false
      }
    }
    // decided now, synchronously: a round issued after this one computes its rollback against it
    let common = 0
    const max = Math.min(this.kv.length, context.length)
    while (common < max && this.kv[common] === context[common]) common++
    if (common === context.length) common-- // a step carries at least one token
    const rollback = this.kv.length - common
    const req = encodeRequest({ type: 'step', tokens: context.subarray(common), draft, rollback })
    this.kv = [...context, ...draft]
    this.synced = context.length
    const written = this.writes.then(async () => {
      this.bytesSent += req.byteLength + varintLength(req.byteLength)
      await this.lp.write(req, opts)
    })
    this.writes = written.catch(() => {})
    const read = this.reads.then(async () => {
      await written
      const frames: Frame[] = []
      for (let i = 0; i <= draft.length; i++) frames.push(await this.readFrame(opts))
      return frames
    })
    this.reads = read.catch(() => {})
    const frames = await read
    this.frames += frames.length
    return frames
  }

  /** says goodbye and closes the stream (each within 1 s, or `options.signal`); aborts it when that fails */
  async close (options: AbortOptions = {}): Promise<void> {
    if (this.closed) return
    this.closed = true
    const signal = (): AbortSignal => AbortSignal.any([AbortSignal.timeout(1000), ...(options.signal != null ? [options.signal] : [])])
    try {
      await this.lp.write(encodeRequest({ type: 'close' }), { signal: signal() })
      await this.stream.close({ signal: signal() })
    } catch (err) {
      this.stream.abort(asError(err))
    }
  }

  abort (err: Error): void {
    this.closed = true
    this.stream.abort(asError(err))
  }
}

/**
 * An /meshllm/infer stream to `peer` (streamTo: on an open connection when there is one). A
 * fresh relayed connection first gets a moment to be upgraded to a direct one when this node
 * has a public address the expert could dial back (DCUtR closes the relayed connection, and
 * every stream on it, once it has); without one no upgrade can come, and it is used at once.
 */
async function openInferStream (node: MeshNode, peer: PeerId, signal?: AbortSignal): Promise<Stream> {
  const conn = connectionFor(node.getConnections(peer))
  if (conn != null && isCircuit(conn.remoteAddr) && Date.now() - conn.timeline.open < UPGRADE_WAIT_MS && node.getMultiaddrs().some(a => !isCircuit(a) && isPublicAddress(a))) {
    await directWithin(node, peer, UPGRADE_WAIT_MS - (Date.now() - conn.timeline.open), signal)
  }
  return await streamTo(node, peer, INFER_PROTOCOL, { signal })
}

/** how long a fresh relayed connection may still be upgraded to a direct one before a session uses it (ms) */
export const UPGRADE_WAIT_MS = 3_000

/** resolves once `peer` has an open direct connection, or after `ms` */
async function directWithin (node: MeshNode, peer: PeerId, ms: number, signal?: AbortSignal): Promise<void> {
  const direct = (): boolean => node.getConnections(peer).some(c => c.status === 'open' && !isCircuit(c.remoteAddr))
  if (direct() || ms <= 0) return
  await new Promise<void>(resolve => {
    const done = (): void => {
      clearTimeout(timer)
      node.removeEventListener('connection:open', onOpen)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const onOpen = (): void => { if (direct()) done() }
    const timer = setTimeout(done, ms)
    node.addEventListener('connection:open', onOpen)
    signal?.addEventListener('abort', done, { once: true })
  })
}

function statusError (res: { status: Status, message: string, haltEnvelope?: Uint8Array }): Error {
  if (res.status === Status.HALTED) return new ExpertHaltedError(res.message, res.haltEnvelope)
  return new ExpertError(`${Status[res.status] ?? res.status}: ${res.message}`, res.status)
}
