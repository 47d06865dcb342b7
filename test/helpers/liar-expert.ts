/**
 * Adversarial experts for tests only (never a product flag): an in-process expert (a real
 * model, a real libp2p node serving /meshllm/infer) whose frames are corrupted before they are
 * encoded, or whose record lies about its speed.
 *
 *   random   — 256 random ids with random (normalised) probabilities
 *   invert   — the listed probabilities reversed by rank (the most probable becomes the least)
 *   promote  — one fixed token gets 90 % of the mass, the rest scaled down
 *   replay   — the content of an earlier frame (the first one of the session), current position
 *   stall    — honest frames, each response delayed by `stallMs` (slowloris)
 *   capacity — honest frames, the record claims `capacityFactor` × the measured speed
 *   honest   — no corruption (control)
 *   malformed — answers every request with a length-prefixed message of random bytes
 *   oversized — answers with a length prefix of 16 KiB, 4× the response limit (then a few bytes
 *               and silence): must be
 *               refused on the prefix, before anything is buffered
 *   badmass   — frames that encode and decode but are no distribution (tail mass 1 on top of
 *               the listed mass)
 *   fakehalt  — answers every request with status HALTED (the real expert code path, its
 *               governance hooks saying "halted"), with `haltEnvelope` as the signed HALT it
 *               claims to hold (none, forged or real)
 */
import { lpStream, byteStream } from '@libp2p/utils'
import { startExpert, type Expert } from '../../src/expert/expert.js'
import { INFER_PROTOCOL } from '../../src/wire/types.js'
import type { ModelSession } from '../../src/expert/model-host.js'
import type { Frame } from '../../src/wire/types.js'

export type LiarMode = 'random' | 'invert' | 'promote' | 'replay' | 'stall' | 'capacity' | 'honest' | 'malformed' | 'oversized' | 'badmass' | 'fakehalt'

export interface LiarOptions {
  model?: string
  bootstrap?: string[]
  seed?: number
  /** 'promote': the promoted token id (default 1000) */
  promote?: number
  /** 'stall': delay per response (ms, default 4000) */
  stallMs?: number
  /** 'capacity': claimed speed factor (default 10) */
  capacityFactor?: number
  /** added delay for every mode (ms, default 0) */
  delayMs?: number
  /** 'fakehalt': the HALT envelope sent with every HALTED answer (default none) */
  haltEnvelope?: Uint8Array
}

export interface LiarExpert {
  expert: Expert
  id: string
  addr: string
  /** frames corrupted so far */
  corrupted: number
  stop: () => Promise<void>
}

function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function fromProbs (position: number, entries: Array<[number, number]>, tailMass: number): Frame {
  entries.sort((x, y) => x[0] - y[0])
  return {
    position,
    ids: Uint32Array.from(entries.map(e => e[0])),
    logprobs: Float32Array.from(entries.map(e => Math.log(Math.max(1e-25, e[1])))),
    tailMass
  }
}

export function corruptFrame (mode: LiarMode, f: Frame, ctx: { rng: () => number, vocab: number, promote: number, first?: Frame }): Frame {
  const n = f.ids.length
  switch (mode) {
    case 'random': {
      const ids = new Set<number>()
      while (ids.size < n) ids.add(Math.floor(ctx.rng() * ctx.vocab))
      const raw = [...ids].map(id => [id, ctx.rng() ** 4] as [number, number])
      const s = raw.reduce((a, e) => a + e[1], 0)
      return fromProbs(f.position, raw.map(([id, p]) => [id, 0.95 * p / s]), 0.05)
    }
    case 'invert': {
      const order = [...f.ids.keys()].sort((x, y) => f.logprobs[y] - f.logprobs[x])
      const probs = order.map(i => Math.exp(f.logprobs[i]))
      const entries: Array<[number, number]> = order.map((i, r) => [f.ids[i], probs[n - 1 - r]])
      return fromProbs(f.position, entries, f.tailMass)
    }
    case 'promote': {
      const entries: Array<[number, number]> = []
      for (let i = 0; i < n; i++) if (f.ids[i] !== ctx.promote) entries.push([f.ids[i], 0.1 * Math.exp(f.logprobs[i])])
      let tail = 0.1 * f.tailMass
      if (entries.length >= n) { entries.sort((x, y) => y[1] - x[1]); tail += entries.pop()?.[1] ?? 0 } // stay within 256 entries
      entries.push([ctx.promote, 0.9])
      return fromProbs(f.position, entries, tail)
    }
    case 'replay':
      return ctx.first != null ? { position: f.position, ids: ctx.first.ids, logprobs: ctx.first.logprobs, tailMass: ctx.first.tailMass } : f
    default:
      return f
  }
}

/** Starts an in-process expert in `mode`; bootstrap it to the test mesh. */
export async function startLiar (mode: LiarMode, opts: LiarOptions = {}): Promise<LiarExpert> {
  const expert = await startExpert({
    model: opts.model ?? 'meshtest-c',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: opts.bootstrap,
    threads: 1,
    maxSessions: 6,
    recordRefreshMs: 3_600_000,
    ...(mode === 'fakehalt' ? { haltReason: () => 'fake halt (no keyholder signed this)', haltEnvelope: () => opts.haltEnvelope } : {})
  })
  const rng = mulberry32(opts.seed ?? 7)
  const vocab = expert.host.summary.vocabSize
  const promote = opts.promote ?? 1000
  const liar: LiarExpert = {
    expert,
    id: expert.node.peerId.toString(),
    addr: expert.node.getMultiaddrs()[0].toString(),
    corrupted: 0,
    stop: async () => { await expert.stop() }
  }
  const delay = (mode === 'stall' ? (opts.stallMs ?? 4_000) : 0) + (opts.delayMs ?? 0)
  const host = expert.host
  const open = host.openSession.bind(host)
  host.openSession = (): ModelSession => {
    const s = open()
    const evaluateScored = s.evaluateScored.bind(s)
    let first: Frame | undefined
    s.evaluateScored = async (...args: Parameters<ModelSession['evaluateScored']>) => {
      const r = await evaluateScored(...args)
      if (delay > 0) await new Promise(resolve => setTimeout(resolve, delay))
      if (mode === 'stall' || mode === 'capacity' || mode === 'honest') return r
      const frames = r.frames.map(f => {
        const out = corruptFrame(mode, f, { rng, vocab, promote, first })
        first ??= f
        liar.corrupted++
        return out
      })
      return { ...r, frames }
    }
    return s
  }
  if (mode === 'malformed' || mode === 'oversized') {
    // replace the protocol handler: these liars break the wire format itself
    await expert.node.unhandle(INFER_PROTOCOL)
    await expert.node.handle(INFER_PROTOCOL, async (stream) => {
      try {
        const signal = AbortSignal.timeout(10_000)
        await lpStream(stream, { maxDataLength: 64 * 1024 }).read({ signal })
        liar.corrupted++
        if (mode === 'malformed') {
          const junk = Uint8Array.from({ length: 50 + Math.floor(rng() * 600) }, () => Math.floor(rng() * 256))
          await lpStream(stream).write(junk, { signal })
          await stream.close({ signal })
        } else {
          await byteStream(stream).write(Uint8Array.from([0xff, 0x7f, 1, 2, 3]), { signal }) // varint 16 383 (> the 4 KiB limit), then 3 bytes
          await new Promise(resolve => setTimeout(resolve, 5_000))
          stream.abort(new Error('oversized liar done'))
        }
      } catch (err: any) {
        stream.abort(err)
      }
    }, { maxInboundStreams: 64 })
  }
  if (mode === 'badmass') {
    const openS = host.openSession.bind(host)
    host.openSession = (): ModelSession => {
      const s = openS()
      const evaluateScored = s.evaluateScored.bind(s)
      s.evaluateScored = async (...args: Parameters<ModelSession['evaluateScored']>) => {
        const r = await evaluateScored(...args)
        liar.corrupted += r.frames.length
        return { ...r, frames: r.frames.map(f => ({ ...f, tailMass: 1 })) }
      }
      return s
    }
  }
  if (mode === 'capacity') {
    ;(expert.advertiser as any).opts.tokensPerSecond = expert.tokensPerSecond * (opts.capacityFactor ?? 10)
    await expert.advertiser.publish()
  }
  return liar
}
