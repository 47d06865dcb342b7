/**
 * Runs a protocol service's stream handler without a libp2p node: a registrar that only
 * records what start() registers, and in-memory stream pairs from @libp2p/utils (streamPair:
 * two real AbstractStreams over the library's mock muxer, so close, reset and back-pressure
 * behave as libp2p's do). The handler gets the inbound end, the test drives the outbound one.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { streamPair } from '@libp2p/utils'
import type { Connection, PeerId, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface'
import type { Registrar } from '@libp2p/interface-internal'
import { varintLength, writeVarint } from '../../src/wire/varint.js'

export interface FakeRegistrar extends Pick<Registrar, 'handle' | 'unhandle'> {
  handlers: Map<string, { handler: StreamHandler, options?: StreamHandlerOptions }>
}

export function fakeRegistrar (): FakeRegistrar {
  const handlers = new Map<string, { handler: StreamHandler, options?: StreamHandlerOptions }>()
  return {
    handlers,
    handle: async (protocol, handler, options) => { handlers.set(protocol, { handler, options }) },
    unhandle: async (protocol) => { handlers.delete(protocol) }
  }
}

export async function newPeerId (): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
}

export interface Dialed {
  /** the client's end */
  stream: Stream
  /** the end the handler got */
  server: Stream
  /** the handler's promise: settles when the handler is done with the stream */
  done: Promise<void>
  /** 'close' listeners on `server` before the handler ran */
  closeListenersBefore: number
}

/**
 * Opens an in-memory stream "from" `peer` and hands its inbound end to the handler `protocol`
 * registered (the services read nothing of the connection but remotePeer).
 */
export async function dial (registrar: FakeRegistrar, protocol: string, peer: PeerId): Promise<Dialed> {
  const registered = registrar.handlers.get(protocol)
  if (registered == null) throw new Error(`nothing handles ${protocol}`)
  const [stream, server] = await streamPair()
  const connection = { remotePeer: peer } as unknown as Connection
  const closeListenersBefore = server.listenerCount('close')
  const done = Promise.resolve(registered.handler(server, connection))
  return { stream, server, done, closeListenersBefore }
}

/** the unsigned-varint length prefix of an `n`-byte message */
export function lengthPrefix (n: number): Uint8Array {
  const out = new Uint8Array(varintLength(n))
  writeVarint(out, 0, n)
  return out
}

/** resolves after `ms` of real time */
export async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

/** lets pending stream events (the mock muxer's queue) and promise chains run */
export async function settle (): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
}

/**
 * Counts 'abort' listeners added minus removed on every AbortSignal while `fn` runs; returns
 * the largest net count held by a signal that is still not aborted when `fn` ends.
 */
export async function abortListenersLeft (fn: () => Promise<void>): Promise<number> {
  const net = new Map<AbortSignal, number>()
  const proto = AbortSignal.prototype as any
  const hadOwn = Object.prototype.hasOwnProperty.call(proto, 'addEventListener')
  const add = proto.addEventListener
  const remove = proto.removeEventListener
  proto.addEventListener = function (this: AbortSignal, type: string, ...rest: unknown[]) {
    if (type === 'abort') net.set(this, (net.get(this) ?? 0) + 1)
    return add.call(this, type, ...rest)
  }
  proto.removeEventListener = function (this: AbortSignal, type: string, ...rest: unknown[]) {
    if (type === 'abort') net.set(this, (net.get(this) ?? 0) - 1)
    return remove.call(this, type, ...rest)
  }
  try {
    await fn()
  } finally {
    if (hadOwn) { proto.addEventListener = add; proto.removeEventListener = remove } else { delete proto.addEventListener; delete proto.removeEventListener }
  }
  let most = 0
  for (const [signal, n] of net) if (!signal.aborted) most = Math.max(most, n)
  return most
}
