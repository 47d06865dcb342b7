/**
 * One process of the scale harness (bench/scale.ts, test/integration/scale.spec.ts): many
 * complete meshllm peers in one process. Every peer is what `meshllm join` runs (MeshPeer:
 * its own key and data directory, libp2p node, DHT server, gossipsub, governance service,
 * `/meshllm/infer`, `/meshllm/generate`, router, DHT record); only the loaded model (weights,
 * context and its session pool) and the router tokenizer are shared by the process.
 *
 * Usage: node dist/bench/scale-host.js --nodes <n> --governance <file> --dir <dir>
 *          [--bootstrap <multiaddr>]… [--model meshtest-c] [--sessions 8] [--concurrency 4]
 * Prints one JSON line per event on stdout ({"ready": …}); answers JSON commands on stdin,
 * one per line, with one JSON line each:
 *   {"cmd":"cpu"}                     process CPU time (µs), RSS and heap (bytes), peer count
 *   {"cmd":"halts"}                   per peer: when it applied a HALT (Date.now ms) or null
 *   {"cmd":"lookup","peers":[…]}      this process's peers fetch those experts' DHT records (found,
 *                                     missing, time to the first valid copy: p50, p95)
 *   {"cmd":"stats"}                   connections, DHT routing table, gossipsub peers (summed)
 *   {"cmd":"profile","ms":…,"file":…} a V8 CPU profile of this process for ms, written to file
 *   {"cmd":"inbound"}                 inbound streams per protocol (all peers) since the last ask
 *   {"cmd":"partition","a":[…],"b":[…],"ms":…}
 *                                     a network partition between peer sets a and b for ms: this
 *                                     process's peers on either side refuse the other side (the
 *                                     blocklist every node has, whose connection gater refuses a
 *                                     peer right after the handshake, both ways) and hang up on
 *                                     it; it heals when the blocks expire
 *   {"cmd":"stop"}                    stops every peer, then exits
 */
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import { MeshPeer } from '../src/peer/mesh-peer.js'
import { loadConfig } from '../src/governance/config.js'
import { ModelHost } from '../src/expert/model-host.js'
import { resolveModel } from '../src/expert/resolve.js'
import { RouterTokenizer } from '../src/router/tokenizer.js'
import { expertRecordKey, openExpertRecord } from '../src/wire/record.js'
import { routingTableSize } from '../src/node/dht-internals.js'
import { errorMessage, errorName } from '../src/util/errors.js'

const args = process.argv.slice(2)
const one = (name: string, d?: string): string | undefined => args.includes(name) ? args[args.indexOf(name) + 1] : d
const many = (name: string): string[] => args.flatMap((a, i) => a === name ? [args[i + 1]] : [])
const NODES = Number(one('--nodes', '10'))
const DIR = one('--dir') ?? (() => { throw new Error('--dir is required') })()
const MODEL = one('--model', 'meshtest-c') as string
const SESSIONS = Number(one('--sessions', '8'))
const CONCURRENCY = Number(one('--concurrency', '4'))
const governance = await loadConfig(one('--governance') ?? (() => { throw new Error('--governance is required') })())
const bootstrap = many('--bootstrap')

const out = (o: unknown): void => { process.stdout.write(JSON.stringify(o) + '\n') }

const modelPath = await resolveModel(MODEL)
const host = await ModelHost.load({ modelPath, threads: 1, maxSessions: SESSIONS, gpu: false })
const tokenizer = await RouterTokenizer.load(modelPath)
const peers: MeshPeer[] = []
const haltAt = new Map<string, number>()

async function startPeer (i: number, boot: string[]): Promise<MeshPeer> {
  try {
    return await startPeerOnce(i, boot)
  } catch (err) {
    // on 2 cores at 300 peers a joiner's three bootstrap peers (another process's) can all be
    // too busy to answer within connectBootstrap's 10 s: once more, through peers of this process
    if (errorName(err) !== 'NoPeersError' || peers.length === 0) throw err
    return await startPeerOnce(i, [...peers].sort(() => Math.random() - 0.5).slice(0, 3).map(p => p.node.getMultiaddrs()[0].toString()))
  }
}

async function startPeerOnce (i: number, boot: string[]): Promise<MeshPeer> {
  const dataDir = join(DIR, `p${i}`)
  await mkdir(dataDir, { recursive: true })
  const peer = await MeshPeer.start({
    expert: { model: modelPath, host, threads: 1, maxSessions: SESSIONS },
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: boot,
    dataDir,
    governance,
    tokenizer,
    catchUpMs: 5_000
  })
  const id = peer.node.peerId.toString()
  peer.on('halt', () => { if (!haltAt.has(id)) haltAt.set(id, Date.now()) })
  peer.on('resume', () => { haltAt.delete(id) })
  return peer
}

const t0 = performance.now()
// without a bootstrap address, this process's first peer is the mesh's bootstrap peer
if (bootstrap.length === 0) peers.push(await startPeer(0, []))
const boot = bootstrap.length > 0 ? bootstrap : [peers[0].node.getMultiaddrs()[0].toString()]
let next = peers.length
await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
  while (next < NODES) {
    const i = next++
    peers.push(await startPeer(i, boot))
  }
}))
for (const p of peers) countInbound(p)
out({ ready: true, startMs: Math.round(performance.now() - t0), addrs: peers.map(p => p.node.getMultiaddrs()[0].toString()) })

async function lookup (ids: string[]): Promise<{ asked: number, found: number, missing: string[], ms: number, firstValueMs: { p50: number, p95: number } | null }> {
  const start = performance.now()
  const missing: string[] = []
  const took: number[] = []
  let found = 0
  let i = 0
  // each record looked up by a different peer of this process, 8 at a time; a lookup ends at
  // the first valid copy (what a router's discovery waits for) or after 10 s
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (i < ids.length) {
      const id = ids[i]
      const peer = peers[i++ % peers.length]
      let ok = false
      const t = performance.now()
      const ac = new AbortController()
      const signal = AbortSignal.any([ac.signal, AbortSignal.timeout(10_000)])
      try {
        const pid = peerIdFromString(id)
        for await (const ev of peer.node.services.dht.get(expertRecordKey(pid), { signal })) {
          if (ev.name === 'VALUE') {
            const r = await openExpertRecord(ev.value).catch(() => undefined)
            if (r?.peerId.equals(pid) === true) { ok = true; break }
          }
        }
      } catch {}
      ac.abort()
      if (ok) { found++; took.push(performance.now() - t) } else missing.push(id)
    }
  }))
  took.sort((a, b) => a - b)
  const q = (p: number): number => Math.round(took[Math.min(took.length - 1, Math.floor(p * took.length))])
  return { asked: ids.length, found, missing, ms: Math.round(performance.now() - start), firstValueMs: took.length > 0 ? { p50: q(0.5), p95: q(0.95) } : null }
}

function stats (): unknown {
  let connections = 0; let routing = 0; let topicPeers = 0; let streams = 0
  for (const p of peers) {
    const conns = p.node.getConnections()
    connections += conns.length
    for (const c of conns) streams += c.streams.length
    routing += routingTableSize(p.node.services.dht)
    topicPeers += p.node.services.pubsub?.getPeers().length ?? 0
  }
  return { peers: peers.length, connections, streams, routingTable: routing, pubsubPeers: topicPeers }
}

// inbound streams per protocol, counted by wrapping each peer's registered handlers (diagnosis)
const inbound = new Map<string, number>()
function countInbound (peer: MeshPeer): void {
  const registrar = (peer.node as unknown as { components: { registrar: { getHandler: (p: string) => { handler: (...a: unknown[]) => unknown } } } }).components.registrar
  for (const proto of peer.node.getProtocols()) {
    const rec = registrar.getHandler(proto)
    const h = rec.handler
    rec.handler = (...a: unknown[]) => { inbound.set(proto, (inbound.get(proto) ?? 0) + 1); return h(...a) }
  }
}
function takeInbound (): Record<string, number> {
  const o = Object.fromEntries(inbound)
  inbound.clear()
  return o
}

async function partition (a: string[], b: string[], ms: number): Promise<{ closed: number }> {
  const sides = [new Set(a), new Set(b)]
  let closed = 0
  await Promise.all(peers.map(async (p) => {
    const me = p.node.peerId.toString()
    const other = sides[0].has(me) ? sides[1] : sides[1].has(me) ? sides[0] : undefined
    if (other == null) return
    for (const id of other) p.node.services.blocklist.block(id, ms)
    await Promise.all(p.node.getConnections().filter(c => other.has(c.remotePeer.toString())).map(async (c) => {
      closed++
      await c.close({ signal: AbortSignal.timeout(2_000) }).catch(err => { c.abort(err) })
    }))
  }))
  return { closed }
}

async function profile (ms: number, file: string): Promise<{ file: string }> {
  const { Session } = await import('node:inspector/promises')
  const { writeFile } = await import('node:fs/promises')
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.start')
  await new Promise(resolve => setTimeout(resolve, ms))
  const { profile } = await session.post('Profiler.stop')
  await writeFile(file, JSON.stringify(profile))
  session.disconnect()
  return { file }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd: { cmd: string, peers?: string[] }
  try { cmd = JSON.parse(line) } catch { out({ error: 'bad command' }); return }
  void (async () => {
    switch (cmd.cmd) {
      case 'cpu': {
        const c = process.cpuUsage(); const m = process.memoryUsage()
        out({ user: c.user, system: c.system, rss: m.rss, heapUsed: m.heapUsed, peers: peers.length }); break
      }
      case 'halts': out({ halts: peers.map(p => haltAt.get(p.node.peerId.toString()) ?? null) }); break
      case 'lookup': out(await lookup(cmd.peers ?? [])); break
      case 'stats': out(stats()); break
      case 'inbound': out(takeInbound()); break
      case 'partition': { const c = cmd as { a?: string[], b?: string[], ms?: number }; out(await partition(c.a ?? [], c.b ?? [], c.ms ?? 30_000)); break }
      case 'profile': out(await profile((cmd as { ms?: number }).ms ?? 10_000, (cmd as { file?: string }).file ?? join(DIR, 'cpu.cpuprofile'))); break
      case 'stop':
        await Promise.all(peers.map(async p => { await p.stop().catch(() => {}) }))
        await tokenizer.close().catch(() => {})
        await host.close().catch(() => {})
        out({ stopped: true })
        process.exit(0)
        break
      default: out({ error: `unknown command ${cmd.cmd}` })
    }
  })().catch(err => { out({ error: errorMessage(err) }) })
})
process.once('SIGTERM', () => { process.exit(0) })
