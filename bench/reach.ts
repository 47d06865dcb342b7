/**
 * `npm run bench:reach` (root, `ip` and `nft`: network namespaces, test/helpers/netns.ts) —
 * what reaching donors behind NAT costs, written to bench/reach.json. Never part of `npm test`.
 *
 * Topology: a public relay + bootstrap expert (R, meshtest-a), two public experts (P1
 * meshtest-c, P2 meshtest-b), two experts behind NATs (E1 meshtest-c behind a port-restricted
 * NAT, E2 meshtest-b behind a symmetric one), a router behind a third NAT (C) and a public
 * router (P, with an announced public address).
 *
 * 1. time from starting `meshllm join` behind NAT until the expert is dialable (its relay
 *    reservation held and its record, with the /p2p-circuit address, published; model load
 *    and the throughput measurement at start included)
 * 2. K = 2 generations (64 tokens, --runs times): time to first token (cold: the first run,
 *    which dials and opens the sessions; warm: the others) and steady tokens/s, when the
 *    experts are direct (P → P1, P2), relayed (C → E1, E2: NAT to NAT stays relayed) and
 *    upgraded (P → E1, E2: DCUtR, the NATed expert dials the public router back)
 * 3. relay traffic per relayed expert per token: bytes the relay host received during the
 *    relayed runs / (tokens × relayed experts)
 * Added latency (netem) is measured only where the kernel has sch_netem (this one does not).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Topology, natAvailable, sweepStale, type NetnsHost } from '../test/helpers/netns.js'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../src/peer/spawn.js'
import { generateKeyholderKey } from '../src/governance/keys.js'
import { configToJson, defaultThresholds } from '../src/governance/config.js'

const args = process.argv.slice(2)
const RUNS = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 5
const TOKENS = 64
const CLIENT = fileURLToPath(new URL('./reach-client.js', import.meta.url))
const OUT = fileURLToPath(new URL('../../bench/reach.json', import.meta.url))
const peerOf = (addr: string): string => addr.split('/p2p/').pop() as string

const ok = await natAvailable()
if (!ok.ok) { process.stderr.write(`bench:reach needs network namespaces: ${ok.reason}\n`); process.exit(2) }
sweepStale()
const dir = await mkdtemp(join(tmpdir(), 'meshllm-bench-reach-'))
const topo = await Topology.create()
const procs: SpawnedExpert[] = []
try {
  const keys = await Promise.all([0, 1, 2].map(async i => (await generateKeyholderKey(join(dir, `k${i}.key`))).privateKey))
  const gov = join(dir, 'governance.json')
  await writeFile(gov, JSON.stringify(configToJson({ meshId: `bench-reach-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 })))
  const [pubR, pub1, pub2, pubRouter] = await Promise.all(['relay', 'p1', 'p2', 'router'].map(async n => await topo.addPublicHost(n)))
  const [natA, natB, natC] = await Promise.all([topo.addNat('a'), topo.addNat('b', { kind: 'symmetric' }), topo.addNat('c')])
  const [hA, hB, hC] = await Promise.all([topo.addHomeHost(natA, 'e1'), topo.addHomeHost(natB, 'e2'), topo.addHomeHost(natC, 'crouter')])
  const join_ = async (host: NetnsHost, model: string, extra: string[], opts: { addr?: (a: string) => boolean } = {}): Promise<SpawnedExpert> => {
    const e = await spawnExpert(model, ['--governance', gov, ...extra], 180_000, { host, listen: ['/ip4/0.0.0.0/tcp/4001'], addr: opts.addr })
    procs.push(e)
    return e
  }
  const pub = (h: NetnsHost): string[] => ['--announce', `/ip4/${h.ip}/tcp/4001`]
  const relay = await join_(pubR, 'meshtest-a', ['--relay', ...pub(pubR)])
  const boot = ['--bootstrap', relay.addr]
  const [p1, p2] = await Promise.all([join_(pub1, 'meshtest-c', [...pub(pub1), ...boot]), join_(pub2, 'meshtest-b', [...pub(pub2), ...boot])])
  // 1. time until a NATed expert is dialable
  const started = Date.now()
  const nated = await Promise.all([[hA, 'meshtest-c'], [hB, 'meshtest-b']].map(async ([h, model]) => {
    const e = await join_(h as NetnsHost, model as string, boot, { addr: a => a.includes('/p2p-circuit') })
    return { e, ms: Date.now() - started }
  }))
  const [e1, e2] = nated.map(n => n.e)
  // 2 and 3
  const client = async (host: NetnsHost, experts: SpawnedExpert[], listen?: string[], announce?: string[]): Promise<any> => {
    const r = await host.run(process.execPath, [CLIENT, JSON.stringify({ bootstrap: [relay.addr], experts: experts.map(e => peerOf(e.addr)), runs: RUNS, tokens: TOKENS, listen, announce })], { timeoutMs: 300_000 })
    if (r.code !== 0) throw new Error(`reach client failed: ${r.stderr.slice(-2000)}`)
    return JSON.parse(r.stdout.trim().split('\n').pop() as string)
  }
  const rx = async (): Promise<number> => Number((await pubR.run('cat', ['/sys/class/net/eth0/statistics/rx_bytes'])).stdout.trim())
  const direct = await client(pubRouter, [p1, p2], ['/ip4/0.0.0.0/tcp/4001'], [`/ip4/${pubRouter.ip}/tcp/4001`])
  const rx0 = await rx()
  const relayed = await client(hC, [e1, e2])
  const relayBytes = await rx() - rx0
  const upgraded = await client(pubRouter, [e1, e2], ['/ip4/0.0.0.0/tcp/4002'], [`/ip4/${pubRouter.ip}/tcp/4002`])
  const summary = (x: any): any => {
    const warm = x.runs.slice(1)
    const med = (v: number[]): number => { const s = [...v].sort((a, b) => a - b); return s[(s.length - 1) >> 1] }
    return { reach: Object.values(x.reach), coldTtftMs: x.runs[0].ttftMs, warmTtftMs: med(warm.map((r: any) => r.ttftMs)), tokensPerSecond: med(warm.map((r: any) => r.tokensPerSecond)), runs: x.runs }
  }
  const result = {
    at: new Date().toISOString(),
    machine: '2 cores, one machine: every namespace shares the CPU; no added latency (this kernel has no sch_netem)',
    k: 2,
    tokens: TOKENS,
    runs: RUNS,
    natedExpertDialableMs: nated.map(n => n.ms),
    direct: summary(direct),
    relayed: summary(relayed),
    upgraded: summary(upgraded),
    relayBytesPerRelayedExpertToken: Math.round(relayBytes / (RUNS * TOKENS * 2))
  }
  await writeFile(OUT, JSON.stringify(result, null, 2) + '\n')
  process.stdout.write(JSON.stringify({ ...result, direct: { ...result.direct, runs: undefined }, relayed: { ...result.relayed, runs: undefined }, upgraded: { ...result.upgraded, runs: undefined } }, null, 2) + '\n')
} finally {
  await Promise.all(procs.map(async p => await stopExpert(p)))
  await topo.destroy()
  await rm(dir, { recursive: true, force: true })
}
