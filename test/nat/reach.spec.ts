/**
 * Reach, on real NATs (network namespaces, test/helpers/netns.ts) with real `meshllm`
 * processes: experts behind a port-restricted and a symmetric NAT, a router behind a third
 * NAT, a public relay + bootstrap expert; `--via` to a NATed routing peer; the relay killed
 * while a second one exists; a keyholder's HALT reaching the NATed experts; mDNS on one LAN
 * with no bootstrap. Needs root + ip + nft; skips without them unless MESHLLM_REQUIRE_NETNS=1
 * (.ci/run sets it), then it fails.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Topology, natAvailable, sweepStale, type NetnsHost } from '../helpers/netns.js'
import { BIN } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait.js'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { generateKeyholderKey } from '../../src/governance/keys.js'
import { configToJson, defaultThresholds } from '../../src/governance/config.js'

const RELAY_PORT = 4001
const peerOf = (addr: string): string => addr.split('/p2p/').pop() as string
const isCircuit = (addr: string): boolean => addr.includes('/p2p-circuit')

describe('reach: NATed experts, relays, hole punching and mDNS (network namespaces, real processes)', function () {
  this.timeout(300_000)
  let topo: Topology
  let dir: string
  let gov: string
  let keyFiles: string[]
  const procs: SpawnedExpert[] = []
  let relay1: SpawnedExpert
  let relay2: SpawnedExpert
  let boot: string[]
  let e1: SpawnedExpert
  let e2: SpawnedExpert
  let hostA: NetnsHost
  let router: NetnsHost

  /** `meshllm <args>` inside a namespace: exit code and output */
  const cli = async (host: NetnsHost, args: string[], timeoutMs = 120_000): Promise<{ code: number, stdout: string, stderr: string }> =>
    await host.run(process.execPath, [BIN, ...args, '--governance', gov], { timeoutMs })

  const startJoin = async (host: NetnsHost, model: string, args: string[], opts: { listen?: string[], addr?: (a: string) => boolean } = {}): Promise<SpawnedExpert> => {
    const e = await spawnExpert(model, ['--governance', gov, ...args], 120_000, { host, listen: opts.listen ?? ['/ip4/0.0.0.0/tcp/0'], addr: opts.addr })
    procs.push(e)
    return e
  }

  before(async function () {
    const ok = await natAvailable()
    if (!ok.ok) {
      if (process.env.MESHLLM_REQUIRE_NETNS === '1') throw new Error(`network namespaces required (MESHLLM_REQUIRE_NETNS=1): ${ok.reason}`)
      this.skip()
    }
    sweepStale()
    dir = await mkdtemp(join(tmpdir(), 'meshllm-nat-'))
    keyFiles = [0, 1, 2].map(i => join(dir, `k${i}.key`))
    const keys = await Promise.all(keyFiles.map(async f => (await generateKeyholderKey(f)).privateKey))
    gov = join(dir, 'governance.json')
    await writeFile(gov, JSON.stringify(configToJson({ meshId: `nat-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 })))
    topo = await Topology.create()
    const pub1 = await topo.addPublicHost('relay1')
    const pub2 = await topo.addPublicHost('relay2')
    const [natA, natB, natC] = await Promise.all([topo.addNat('a'), topo.addNat('b', { kind: 'symmetric' }), topo.addNat('c')])
    ;[hostA, router] = await Promise.all([topo.addHomeHost(natA, 'e1'), topo.addHomeHost(natC, 'router')])
    const hostB = await topo.addHomeHost(natB, 'e2')
    // two public relay + bootstrap experts announce their public addresses (no AutoNAT verifies one here)
    relay1 = await startJoin(pub1, 'meshtest-a', ['--relay', '--announce', `/ip4/${pub1.ip}/tcp/${RELAY_PORT}`], { listen: [`/ip4/0.0.0.0/tcp/${RELAY_PORT}`] })
    relay2 = await startJoin(pub2, 'meshtest-a', ['--relay', '--announce', `/ip4/${pub2.ip}/tcp/${RELAY_PORT}`, '--bootstrap', relay1.addr], { listen: [`/ip4/0.0.0.0/tcp/${RELAY_PORT}`] })
    boot = [relay1.addr, relay2.addr].flatMap(a => ['--bootstrap', a])
    const t0 = Date.now()
    // home donors: no flag about NAT at all (public bootstrap peers and no public address: one relay reservation)
    ;[e1, e2] = await Promise.all([
      startJoin(hostA, 'meshtest-c', boot, { addr: isCircuit }),
      startJoin(hostB, 'meshtest-b', boot, { addr: isCircuit })
    ])
    console.log(`      two NATed experts started and advertised their relay addresses in ${Date.now() - t0} ms (model load included)`)
  })

  after(async () => {
    await Promise.all(procs.map(async p => await stopExpert(p)))
    await topo?.destroy()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('experts behind a port-restricted and a symmetric NAT and a router behind a third NAT generate at K = 4 with two public relay experts', async () => {
    const t0 = Date.now()
    const r = await cli(router, ['generate', 'The kernel', ...boot, '-k', '4', '--max-tokens', '12', '--temperature', '0', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    const ids = [relay1, relay2, e1, e2].map(e => peerOf(e.addr))
    assert.equal(out.effectiveK, 4)
    assert.deepEqual([...out.experts].sort(), [...ids].sort())
    // NAT to NAT over TCP stays relayed in js-libp2p (identify ignores TCP observed addresses:
    // no public address to punch to); the public experts are direct
    assert.equal(out.reach[peerOf(relay1.addr)], 'direct')
    assert.equal(out.reach[peerOf(relay2.addr)], 'direct')
    assert.equal(out.reach[peerOf(e1.addr)], 'relayed')
    assert.equal(out.reach[peerOf(e2.addr)], 'relayed')
    // `meshllm status` says how each expert is reached
    const st = await router.run(process.execPath, [BIN, 'status', ...boot, '--json'], { timeoutMs: 60_000 })
    assert.equal(st.code, 0, st.stderr)
    const reach = Object.fromEntries(JSON.parse(st.stdout).experts.map((x: { peerId: string, reach: string }) => [x.peerId, x.reach]))
    assert.deepEqual([reach[peerOf(e1.addr)], reach[peerOf(e2.addr)], reach[peerOf(relay1.addr)]], ['relayed', 'relayed', 'direct'])
    console.log(`      K=4 from NAT C: ${out.tokens} tokens in ${out.elapsedMs} ms (process ${Date.now() - t0} ms); reach ${JSON.stringify(Object.values(out.reach))}`)
  })

  it('--via to a routing peer behind NAT: the client reaches it through the relay', async () => {
    const r = await cli(router, ['generate', 'The kernel', '--via', e1.addr, '-k', '2', '--max-tokens', '6', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout)
    assert.equal(out.effectiveK, 2)
    assert.ok(out.experts.includes(peerOf(e1.addr)), 'the NATed routing peer used its own expert')
  })

  it('the relay dies mid-generation while a second relay exists: the NATed expert re-reserves, the next generation uses it', async () => {
    // the relay expert 1 holds its reservation on, killed under a long generation from NAT C
    const [dying, surviving] = e1.addr.includes(peerOf(relay1.addr)) ? [relay1, relay2] : [relay2, relay1]
    const gen = router.spawn(process.execPath, [BIN, 'generate', 'The kernel', ...boot, '-k', '3', '--max-tokens', '400', '--temperature', '0.8', '--governance', gov, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    gen.stderr?.on('data', (d) => { stderr += String(d) })
    let stdout = ''
    gen.stdout?.on('data', (d) => { stdout += String(d) })
    const ended = new Promise<number>(resolve => gen.once('exit', (code) => resolve(code ?? 1)))
    await new Promise(resolve => setTimeout(resolve, 3_000))
    const killedAt = Date.now()
    dying.child.kill('SIGKILL')
    const code = await ended
    // completed, or failed with one clear line
    if (code === 0) assert.ok(JSON.parse(stdout).tokens > 0)
    else assert.match(stderr.trim().split('\n').pop() ?? '', /^meshllm: /)
    // the NATed experts hold their reservations on the surviving relay and re-advertise: a generation uses them
    let used: string[] = []
    await waitFor(async () => {
      const r = await cli(router, ['generate', 'The kernel', '--bootstrap', surviving.addr, '-k', '3', '--max-tokens', '4', '--json'], 60_000)
      if (r.code !== 0) return false
      used = JSON.parse(r.stdout).experts
      return used.includes(peerOf(e1.addr)) && used.includes(peerOf(e2.addr))
    }, 120_000, 'a generation through relay 2 with both NATed experts')
    console.log(`      the relay of expert 1 killed: the generation under way ${code === 0 ? 'completed' : `failed clearly (exit ${code})`}; both NATed experts reachable through the other relay after ${Date.now() - killedAt} ms`)
  })

  it('a keyholder\'s HALT reaches the NATed experts within 1 s', async () => {
    const alive = [relay1, relay2].find(r => r.child.exitCode == null && r.child.signalCode == null) as SpawnedExpert
    const r = await cli(router, ['halt', '--key', keyFiles[0], '--bootstrap', alive.addr, '--reason', 'nat test', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const issued = JSON.parse(r.stdout.trim().split('\n').pop() as string).version as number
    const appliedAt = (e: SpawnedExpert): number | undefined => { const m = /HALTED by governance: nat test \(at (\d+)\)/.exec(e.stderr()); return m != null ? Number(m[1]) : undefined }
    await waitFor(() => appliedAt(e1) != null && appliedAt(e2) != null, 10_000, 'both NATed experts to apply the HALT')
    const delays = [e1, e2].map(e => (appliedAt(e) as number) - issued)
    console.log(`      HALT applied by the NATed experts ${delays.join(' and ')} ms after it was issued`)
    for (const d of delays) assert.ok(d <= 1_000, `applied ${d} ms after issue`)
  })
})

describe('reach: mDNS on one LAN, no bootstrap (network namespaces, real processes)', function () {
  this.timeout(180_000)
  let topo: Topology
  let dir: string
  let expert: SpawnedExpert | undefined

  before(async function () {
    const ok = await natAvailable()
    if (!ok.ok) {
      if (process.env.MESHLLM_REQUIRE_NETNS === '1') throw new Error(`network namespaces required (MESHLLM_REQUIRE_NETNS=1): ${ok.reason}`)
      this.skip()
    }
    topo = await Topology.create()
    dir = await mkdtemp(join(tmpdir(), 'meshllm-mdns-'))
  })

  after(async () => {
    if (expert != null) await stopExpert(expert)
    await topo?.destroy()
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('`join` and `generate` on one LAN find each other with no --bootstrap', async () => {
    const keys = await Promise.all([0, 1, 2].map(async i => (await generateKeyholderKey(join(dir, `k${i}.key`))).privateKey))
    const gov = join(dir, 'governance.json')
    await writeFile(gov, JSON.stringify(configToJson({ meshId: `lan-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 })))
    const nat = await topo.addNat('lan')
    const [a, b] = await Promise.all([topo.addHomeHost(nat, 'a'), topo.addHomeHost(nat, 'b')])
    expert = await spawnExpert('meshtest-c', ['--governance', gov], 120_000, { host: a, listen: ['/ip4/0.0.0.0/tcp/0'] })
    const r = await b.run(process.execPath, [BIN, 'generate', 'The kernel', '-k', '1', '--max-tokens', '4', '--json', '--governance', gov], { timeoutMs: 60_000 })
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout).experts, [peerOf(expert.addr)])
  })
})
