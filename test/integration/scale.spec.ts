/**
 * The scale harness at 30 peers (issue 13; `npm run bench:scale` runs it to 300): 30 complete
 * meshllm peers in two processes (bench/scale-host.ts), then what a user does against them,
 * each from its own process or node: a cold one-token generate, `status` a page at a time, a
 * router that samples instead of enumerating, every expert's record found in the DHT, and a
 * keyholder's HALT reaching all 30, and the side of a partition that missed a HALT catching up
 * once it heals. No timing is asserted (bench/scale.json has the numbers).
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ScaleMesh, meshllm } from '../../bench/scale-mesh.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { discoverExperts } from '../../src/router/discovery.js'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { lengthPrefixOptions } from '../../src/wire/length-prefix.js'
import { MAX_RECORD_BYTES, RECORD_PROTOCOL } from '../../src/wire/types.js'
import { openExpertRecord } from '../../src/wire/record.js'

const PEERS = 30

describe('scale: 30 peers', function () {
  this.timeout(300_000)
  let dir: string
  let mesh: ScaleMesh

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'meshllm-scale-spec-'))
    mesh = await ScaleMesh.start({ nodes: PEERS, perProcess: 15, dir })
  })

  after(async function () {
    await mesh?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('every expert record is found in the DHT by the peers of the other process', async function () {
    const r = await mesh.lookup(1, mesh.peerIds)
    assert.deepEqual(r.missing, [])
    assert.equal(r.found, PEERS)
  })

  it('a cold one-token generate from a new process uses K = 3', async function () {
    const r = await meshllm(['generate', '--bootstrap', mesh.addrs[17], '--governance', mesh.governance.file, '--max-tokens', '1', '--k', '3', '--json', 'The kernel'])
    assert.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}')
    assert.equal(j.tokens, 1)
    assert.equal(j.effectiveK, 3)
  })

  it('status says how many experts it has seen and fetches one page of records', async function () {
    const all = await meshllm(['status', '--bootstrap', mesh.bootstrap, '--json'])
    assert.equal(all.code, 0, all.stderr)
    const a = JSON.parse(all.stdout)
    assert.equal(a.seen, PEERS)
    assert.equal(a.pages, 1)
    // records the time allowed for (bench/scale.json: how many, how fast); each one listed is real
    assert.ok(a.experts.length > 0)
    assert.equal(a.experts.length + a.missing.length <= PEERS, true)
    for (const x of a.experts) assert.ok(mesh.peerIds.includes(x.peerId))
    const third = await meshllm(['status', '--bootstrap', mesh.bootstrap, '--json', '--page-size', '12', '--page', '3'])
    assert.equal(third.code, 0, third.stderr)
    const t = JSON.parse(third.stdout)
    assert.equal(t.seen, PEERS)
    assert.equal(t.pages, 3)
    // the last page: peers 25 … 30 in peer id order, and no other
    const last = [...mesh.peerIds].sort().slice(24)
    assert.ok(t.experts.length > 0)
    for (const x of t.experts) assert.ok(last.includes(x.peerId), x.peerId)
  })

  describe('a router samples the mesh', function () {
    let node: MeshNode
    let tokenizer: RouterTokenizer
    before(async function () {
      node = await createMeshNode({ listen: [], dhtServer: false })
      await node.start()
      await connectBootstrap(node, [mesh.addrs[5]])
      tokenizer = await RouterTokenizer.load('meshtest-c')
    })
    after(async function () {
      await tokenizer?.close()
      await node?.stop()
    })

    it('an expert answers /meshllm/record with its own signed record', async function () {
      const expert = peerIdFromString(mesh.peerIds[11])
      const stream = await node.dialProtocol(multiaddr(mesh.addrs[11]), RECORD_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
      const lp = lpStream(stream, lengthPrefixOptions(MAX_RECORD_BYTES))
      const record = await openExpertRecord(await lp.read({ signal: AbortSignal.timeout(5_000) }))
      assert.ok(record.peerId.equals(expert))
      assert.equal(Buffer.from(record.tokenizerFingerprint).toString('hex'), Buffer.from(tokenizer.fingerprint).toString('hex'))
      await stream.close()
    })

    it('a discovery that wants 8 experts stops short of fetching all 30 records', async function () {
      const r = await discoverExperts(node, tokenizer.fingerprint, { want: 8, signal: AbortSignal.timeout(10_000) })
      // one holder's answer: a sample of the providers
      assert.ok((r.providers ?? 0) >= 8, `${r.providers} providers`)
      assert.ok(r.compatible.length >= 8, `${r.compatible.length} records`)
      // the fetches in flight when the 8th arrived may still land (8 at a time)
      assert.ok(r.compatible.length < 8 + 8, `${r.compatible.length} records`)
    })

    it('a generation starts once K experts are known, the sample fills in the background, and stays bounded', async function () {
      const router = new Router(node, tokenizer, { discoverySample: 6, discoveryTtlMs: 200 })
      const first = await router.generate('The kernel', { k: 2, maxTokens: 2, ignoreEos: true })
      assert.equal(first.effectiveK, 2)
      const known = (await router.experts()).compatible.length
      assert.ok(known >= 2 && known < PEERS, `${known} known after the first discovery`)
      await new Promise(resolve => setTimeout(resolve, 300))
      const again = (await router.experts()).compatible.length
      assert.ok(again >= known && again < PEERS, `${again} known after a refresh`)
      const second = await router.generate('The kernel', { k: 2, maxTokens: 2, ignoreEos: true })
      assert.equal(second.effectiveK, 2)
    })

    it('experts a background discovery found after the generation began join it as candidates, up to the sample', async function () {
      const router = new Router(node, tokenizer, { discoverySample: 6, discoveryTtlMs: 600_000 })
      const all = (await router.experts(true, AbortSignal.timeout(20_000), 6)).compatible
      assert.ok(all.length >= 6, `${all.length} known`)
      // the generation's own discovery answered with two (the first K found); the rest of the
      // sample is what the background discovery added meanwhile (the router's known records)
      const two = all.slice(0, 2)
      router.experts = async () => ({ compatible: two, incompatible: [] })
      // policy random: K of the candidates at every step, so those that joined are asked too
      const r = await router.generate('The kernel', { k: 2, maxTokens: 24, ignoreEos: true, policy: 'random' })
      assert.equal(r.tokens, 24)
      assert.ok(r.experts.length > 2, `only the first two served (${r.experts.length})`)
      assert.ok(r.experts.length <= 6, `${r.experts.length} served: more than the sample`)
    })
  })

  it('a keyholder\'s HALT reaches all 30 peers, and a RESUME too', async function () {
    const h = await meshllm(['halt', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[0], '--reason', 'scale spec', '--bootstrap', mesh.addrs[PEERS - 1], '--json'])
    assert.equal(h.code, 0, h.stderr)
    let halts = await mesh.waitHalts(x => x.every(t => t != null), 10_000)
    assert.equal(halts.filter(t => t != null).length, PEERS)
    const r = await meshllm(['resume', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[1], '--key', mesh.governance.keyFiles[2], '--bootstrap', mesh.addrs[3]])
    assert.equal(r.code, 0, r.stderr)
    halts = await mesh.waitHalts(x => x.every(t => t == null), 10_000)
    assert.equal(halts.filter(t => t != null).length, 0)
  })

  it('a HALT issued during a partition reaches the cut-off side once the partition heals', async function () {
    const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
    // peers 20 … 29 (10 of the second process's 15) are cut off from the other 20
    const A = 20
    const PARTITION_MS = 20_000
    const healAt = Date.now() + PARTITION_MS
    assert.ok(await mesh.partition(mesh.peerIds.slice(0, A), mesh.peerIds.slice(A), PARTITION_MS) > 0)
    const h = await meshllm(['halt', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[0], '--reason', 'partition', '--bootstrap', mesh.addrs[0], '--json'])
    assert.equal(h.code, 0, h.stderr)
    let halts = await mesh.waitHalts(x => x.slice(0, A).every(t => t != null), healAt - Date.now() - 1_000)
    assert.ok(Date.now() < healAt, 'still partitioned')
    assert.equal(halts.slice(0, A).filter(t => t != null).length, A)
    // the partition held: nothing reached the other side
    assert.equal(halts.slice(A).filter(t => t != null).length, 0)
    // healed: no connection crosses it any more; libp2p redials the peers kad-dht keeps alive
    // (its closest), every other re-sync round dials a remembered peer, and a new connection
    // starts a catch-up: within 2 × 60 s of rounds at most
    await sleep(healAt - Date.now())
    halts = await mesh.waitHalts(x => x.every(t => t != null), 150_000)
    assert.equal(halts.filter(t => t != null).length, PEERS)
    // a RESUME reaches both sides (gossip over the connections that cross again, or the next
    // catch-up). Sent through the side that was never cut off: right after the heal, every
    // peer of the other side is redialling over the same loopback address, and a new client
    // there was seen to lose its only connection
    const r = await meshllm(['resume', '--governance', mesh.governance.file, '--key', mesh.governance.keyFiles[1], '--key', mesh.governance.keyFiles[2], '--bootstrap', mesh.addrs[1]])
    assert.equal(r.code, 0, r.stderr)
    halts = await mesh.waitHalts(x => x.every(t => t == null), 150_000)
    assert.equal(halts.filter(t => t != null).length, 0)
  })
})
