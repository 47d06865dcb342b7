/*
 * Hostile keyholders and peers against governance, on real nodes (issue "Hostile peers"
 * §3–§7): one `meshllm join` expert process, in-process libp2p nodes whose governance clocks
 * run 10 minutes fast and slow, a forger node, and the real keyholder CLI.
 *   §3  a HALT at version 2^53 - 1 is refused everywhere; one at the clock edge is lifted by a
 *       2-of-3 RESUME at once
 *   §4  the CLI reports the truth (stale → exit 11); a real HALT reaches skewed clocks
 *   §5  the worst forgeries cost at most one signature check on gossip, push and catch-up;
 *       a forger's gossipsub score falls below the graylist; catch-up is rate-limited
 *   §6  state is on disk without --data-dir; one process per data directory
 *   §7  the development governance is refused off loopback
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { configToJson, defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { Kind, createEnvelope, encodeEnvelope, encodePayload, type Message } from '../../src/governance/envelope.js'
import { generateKeyholderKey } from '../../src/governance/keys.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GOV_PUSH_PROTOCOL, GOV_SYNC_PROTOCOL, GovernanceService, govTopic } from '../../src/governance/service.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))
const MIN = 60_000
const EXIT_REFUSED = 11
const EXIT_USAGE = 2

function cli (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: timeoutMs, env: { ...process.env, ...env } }, (err: any, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

interface Light { node: MeshNode, gov: GovernanceService }

async function lightNode (config: GovernanceConfig, bootstrap: string, clockOffsetMs = 0): Promise<Light> {
  const node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  await node.start()
  const gov = new GovernanceService(node, new GovernanceState(config, undefined, () => Date.now() + clockOffsetMs))
  await gov.start()
  await connectBootstrap(node, [bootstrap])
  return { node, gov }
}

describe('adversarial: governance on real nodes', function () {
  this.timeout(180_000)
  let dir: string
  let govFile: string
  let keyFiles: string[]
  let keys: PrivateKey[]
  let config: GovernanceConfig
  let expert: SpawnedExpert
  let fast: Light
  let slow: Light
  const lights: Light[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshllm-adv-gov-'))
    keyFiles = [0, 1, 2].map(i => join(dir, `k${i}.key`))
    keys = await Promise.all(keyFiles.map(async f => (await generateKeyholderKey(f)).privateKey))
    config = { meshId: `adv-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 }
    govFile = join(dir, 'governance.json')
    await writeFile(govFile, JSON.stringify(configToJson(config)))
    expert = await spawnExpert('meshtest-c', ['--governance', govFile])
    fast = await lightNode(config, expert.addr, 10 * MIN)
    slow = await lightNode(config, expert.addr, -10 * MIN)
    lights.push(fast, slow)
    await waitFor(() => lights.every(l => (l.node.services.pubsub as any).getSubscribers(l.gov.topic).length > 0), 20_000, 'governance topic peers')
  })

  after(async () => {
    for (const l of lights) { await l.gov.stop(); await l.node.stop() }
    if (expert != null) await stopExpert(expert)
    await rm(dir, { recursive: true, force: true })
  })

  const sign = async (kind: 'halt' | 'resume', extra: string[], out: string, signers = [0]): Promise<string> => {
    const r = await cli(['sign', kind, ...extra, '--governance', govFile, ...signers.flatMap(i => ['--key', keyFiles[i]]), '--out', out])
    assert.equal(r.code, 0, r.stderr)
    return out
  }
  const submit = async (file: string): Promise<{ code: number, json: any, stderr: string }> => {
    const r = await cli(['submit', file, '--governance', govFile, '--bootstrap', expert.addr, '--json'])
    return { code: r.code, json: r.stdout.trim() !== '' ? JSON.parse(r.stdout.trim().split('\n').pop()!) : undefined, stderr: r.stderr }
  }

  it('§3 a HALT at version 2^53 - 1 is refused by the CLI (exit 11, "future") and by every node it is pushed to', async () => {
    const file = await sign('halt', ['--version', String(2 ** 53 - 1), '--reason', 'stolen key'], join(dir, 'max.gov'))
    const r = await submit(file)
    assert.equal(r.code, EXIT_REFUSED, r.stderr)
    assert.equal(r.json.code, 'future')
    // a client that skips its own check: the nodes refuse it themselves
    const bytes = Uint8Array.from(await readFile(file))
    assert.equal(await fast.gov.pushTo(slow.node.peerId, bytes), 'future')
    assert.equal(await slow.gov.pushTo((await expertPeer()), bytes), 'future')
    for (const l of lights) assert.equal(l.gov.state.halted, undefined)
  })

  it('§3 a HALT at the clock edge is applied; a 2-of-3 RESUME lifts it at once, on every node (skewed clocks included)', async () => {
    const edge = Date.now() + 45 * MIN // inside the skew bound of the slow (−10 min) node too
    const halt = await sign('halt', ['--version', String(edge), '--reason', 'edge'], join(dir, 'edge.gov'))
    const h = await submit(halt)
    assert.equal(h.code, 0, h.stderr)
    assert.equal(h.json.applied, true)
    await waitFor(() => lights.every(l => l.gov.state.halted?.version === edge), 10_000, `the edge HALT on every node (${JSON.stringify(h.json)})`).catch(err => { throw new Error(`${err.message}: ${JSON.stringify(lights.map(l => [l.gov.state.version, l.gov.state.halted, l.gov.state.rejected]))}`) })
    const r = await cli(['resume', '--governance', govFile, '--key', keyFiles[1], '--key', keyFiles[2], '--bootstrap', expert.addr, '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.ok(JSON.parse(r.stdout.trim()).peers.applied >= 1)
    await waitFor(() => lights.every(l => l.gov.state.halted == null), 10_000, 'the RESUME on every node')
    // and the stale HALT, submitted again, is refused: the CLI says so (exit 11) instead of "published"
    const again = await submit(halt)
    assert.equal(again.code, EXIT_REFUSED, again.stderr)
    assert.equal(again.json.code, 'stale')
    assert.equal(again.json.applied, false)
  })

  it('§4 a real HALT from `meshllm halt` reaches nodes whose clocks are 10 minutes fast and slow; the CLI reports who applied it', async () => {
    const r = await cli(['halt', '--governance', govFile, '--key', keyFiles[0], '--reason', 'skew test', '--bootstrap', expert.addr, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout.trim())
    assert.equal(out.applied, true)
    assert.ok((out.peers.applied ?? 0) + (out.peers.known ?? 0) >= 1, JSON.stringify(out.peers))
    await waitFor(() => lights.every(l => l.gov.state.halted?.reason === 'skew test'), 10_000, 'the HALT on the skewed nodes')
    const res = await cli(['resume', '--governance', govFile, '--key', keyFiles[1], '--key', keyFiles[2], '--bootstrap', expert.addr])
    assert.equal(res.code, 0, res.stderr)
    await waitFor(() => lights.every(l => l.gov.state.halted == null), 10_000, 'resumed')
  })

  async function expertPeer (): Promise<any> {
    return fast.node.getPeers().find(p => expert.addr.endsWith(p.toString()))
  }

  describe('§5 forgeries cost nothing to refuse', () => {
    let forger: MeshNode
    const now = (): number => Date.now()
    // above every version the earlier tests reached (≈ now + 45 min), within every node's clock bound
    const haltMsg = (): Message & { kind: Kind.HALT } => ({ meshId: config.meshId, kind: Kind.HALT, reason: 'x'.repeat(1024), version: now() + 50 * MIN, issuedAtMs: now(), expiresAtMs: now() + 3_600_000 })
    let outsiders: PrivateKey[]

    before(async () => {
      outsiders = await Promise.all(Array.from({ length: 64 }, async () => await generateKeyPair('Ed25519')))
      forger = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
      await forger.start()
      ;(forger.services.pubsub as any).subscribe(govTopic(config.meshId))
      await connectBootstrap(forger, [fast.node.getMultiaddrs()[0].toString()])
      await waitFor(() => (forger.services.pubsub as any).getSubscribers(govTopic(config.meshId)).length > 0 && (fast.node.services.pubsub as any).getSubscribers(govTopic(config.meshId)).some((p: any) => p.equals(forger.peerId)), 20_000, 'forger in the topic')
    })
    after(async () => { await forger?.stop() })

    /** the worst 16 KiB forgeries a peer can build */
    const forgeries = (): Array<[string, Uint8Array]> => {
      const payload = encodePayload(haltMsg())
      const junk = (publicKey: Uint8Array): { publicKey: Uint8Array, signature: Uint8Array } => ({ publicKey, signature: new Uint8Array(64).fill(0xab) })
      const holders = keys.map(k => k.publicKey.raw)
      const raw = (entries: Array<{ publicKey: Uint8Array, signature: Uint8Array }>): Uint8Array => {
        const head = new Uint8Array(5); head[0] = 1; new DataView(head.buffer).setUint32(1, payload.length)
        return Uint8Array.from([...head, ...payload, entries.length, ...entries.flatMap(e => [...e.publicKey, ...e.signature])])
      }
      return [
        ['64 copies of one keyholder key, junk signatures', raw(Array(64).fill(junk(holders[0])))],
        ['64 keys that are not keyholders', encodeEnvelope(payload, outsiders.map(k => junk(k.publicKey.raw)))],
        ['every keyholder, junk signatures', encodeEnvelope(payload, holders.map(junk))]
      ]
    }

    it('each costs at most one Ed25519 verification, over gossip, push and catch-up; a stale genuine message costs none', async () => {
      const target = fast
      for (const [name, bytes] of forgeries()) {
        assert.ok(bytes.length <= 16 * 1024, `${name}: ${bytes.length} bytes`)
        const before = target.gov.state.verifications.count
        assert.notEqual(await forgerPush(bytes), 'applied', name)
        assert.ok(target.gov.state.verifications.count - before <= 1, `${name} over push: ${target.gov.state.verifications.count - before} verifications`)
      }
      // gossip: the same forgeries published by the forger
      const before = target.gov.state.verifications.count
      const rejectedBefore = target.gov.state.rejected.forged + target.gov.state.rejected.malformed
      for (const [, bytes] of forgeries()) await (forger.services.pubsub as any).publish(govTopic(config.meshId), bytes).catch(() => {})
      await waitFor(() => target.gov.state.rejected.forged + target.gov.state.rejected.malformed >= rejectedBefore + 3, 10_000, 'the gossiped forgeries refused')
      assert.ok(target.gov.state.verifications.count - before <= 3, `${target.gov.state.verifications.count - before} verifications for 3 gossiped forgeries`)
      // a genuine but stale envelope: refused before any signature check
      const stale = await createEnvelope({ ...haltMsg(), version: target.gov.state.version }, [keys[0]])
      const b2 = target.gov.state.verifications.count
      assert.equal(await forgerPush(stale), 'stale')
      assert.equal(target.gov.state.verifications.count, b2)

      async function forgerPush (bytes: Uint8Array): Promise<string> {
        const stream: Stream = await forger.dialProtocol(target.node.peerId, GOV_PUSH_PROTOCOL)
        const lp = lpStream(stream)
        await lp.write(bytes)
        const answer = new TextDecoder().decode((await lp.read()).subarray())
        await stream.close()
        return answer
      }
    })

    it('a catch-up answer of 1,024 forgeries costs the node at most 4 refusals, then it stops reading that peer', async () => {
      const [, worst] = forgeries()[2]
      await forger.handle(GOV_SYNC_PROTOCOL, async (stream) => {
        const lp = lpStream(stream)
        try {
          for (let i = 0; i < 1024; i++) await lp.write(worst)
          await stream.close()
        } catch (err: any) { stream.abort(err) }
      })
      const before = slow.gov.state.verifications.count
      const refusedBefore = slow.gov.state.rejected.forged
      const applied = await slow.gov.syncFrom(forger.peerId)
      assert.equal(applied, 0)
      assert.ok(slow.gov.state.rejected.forged - refusedBefore <= 4, `${slow.gov.state.rejected.forged - refusedBefore} refusals`)
      assert.ok(slow.gov.state.verifications.count - before <= 4)
      await forger.unhandle(GOV_SYNC_PROTOCOL)
    })

    it('a forger\'s gossipsub score falls below the graylist threshold: what it sends next is dropped unread', async () => {
      const pubsub = fast.node.services.pubsub as any
      // gossipsub caches a peer's score for one heartbeat
      await waitFor(() => pubsub.getScore(forger.peerId.toString()) < -80, 5_000, `the forger's score below -80 (${pubsub.getScore(forger.peerId.toString())})`)
      const seen = (): number => fast.gov.state.rejected.forged + fast.gov.state.rejected.malformed
      const before = seen()
      for (const [, bytes] of forgeries()) await (forger.services.pubsub as any).publish(govTopic(config.meshId), bytes).catch(() => {})
      // nothing to wait for: the forgeries must NOT reach the validator (other nodes refuse them too)
      await new Promise(resolve => setTimeout(resolve, 1_000))
      assert.equal(seen(), before)
    })

    it('catch-up is rate-limited per address: 40 requests in a row get at most 16 answers per 10 s window', async () => {
      assert.ok(fast.gov.state.catchUp().length > 0, 'nothing to catch up: answers and refusals would look alike')
      let answered = 0
      const t0 = Date.now()
      for (let i = 0; i < 40; i++) {
        try {
          const stream = await forger.dialProtocol(fast.node.peerId, GOV_SYNC_PROTOCOL)
          const lp = lpStream(stream)
          // answered: at least one envelope; refused: the stream ends without one
          try {
            await lp.read({ signal: AbortSignal.timeout(2_000) })
            answered++
          } catch {}
          await stream.close().catch(() => {})
        } catch {}
      }
      // the limit is per address (every loopback peer shares 127.0.0.1) and per fixed window,
      // which other peers' catch-ups may have opened before the loop: the loop may see a window
      // end (and a new one begin) once per 10 s it runs, and once more
      const windows = 1 + Math.ceil((Date.now() - t0) / 10_000)
      assert.ok(answered >= 1 && answered <= 16 * windows && answered < 40, `${answered} answered in ${windows} window(s)`)
    })
  })

  describe('§6 state on disk without --data-dir; §7 development governance stays on loopback', () => {
    it('a node without --data-dir keeps its state in the default directory: halted across a restart; a second join on the same directory is refused', async () => {
      const home = await mkdtemp(join(tmpdir(), 'meshllm-home-'))
      const env = { MESHLLM_HOME: home }
      try {
        const a = await spawnExpert('meshtest-c', ['--governance', govFile, '--bootstrap', expert.addr], 120_000, { env, defaultDataDir: true })
        assert.ok(a.stderr().includes(join(home, 'node')), a.stderr())
        const second = await cli(['join', '--model', 'meshtest-c', '--governance', govFile, '--listen', '/ip4/127.0.0.1/tcp/0'], env)
        assert.equal(second.code, EXIT_USAGE, second.stderr)
        const r = await cli(['halt', '--governance', govFile, '--key', keyFiles[0], '--reason', 'restart test', '--bootstrap', a.addr])
        assert.equal(r.code, 0, r.stderr)
        await waitFor(() => a.stderr().includes('HALTED by governance: restart test'), 10_000, 'the HALT on the node')
        await stopExpert(a)
        const b = await spawnExpert('meshtest-c', ['--governance', govFile], 120_000, { env, defaultDataDir: true })
        assert.match(b.stderr(), /HALTED: restart test/)
        await stopExpert(b)
        // a node with no state joining the halted mesh has caught up before it serves: by the
        // time it prints its listen address (after /meshllm/infer is registered), it is halted
        const c = await spawnExpert('meshtest-c', ['--governance', govFile, '--bootstrap', expert.addr])
        assert.match(c.stderr(), /caught up from \d+ peer\(s\): version \d+, HALTED: restart test/)
        await stopExpert(c)
        const res = await cli(['resume', '--governance', govFile, '--key', keyFiles[1], '--key', keyFiles[2], '--bootstrap', expert.addr])
        assert.equal(res.code, 0, res.stderr)
      } finally {
        await rm(home, { recursive: true, force: true })
      }
    })

    it('the development governance is refused off loopback (exit 2) by join and by client commands, before anything is dialled', async () => {
      const join0 = await cli(['join', '--model', 'meshtest-c', '--listen', '/ip4/0.0.0.0/tcp/0'], { MESHLLM_HOME: dir })
      assert.equal(join0.code, EXIT_USAGE, join0.stderr)
      const peer = expert.addr.split('/p2p/')[1]
      const halt = await cli(['halt', '--key', join(fileURLToPath(new URL('../../../test/fixtures/keys/', import.meta.url)), 'dev-1.key'), '--bootstrap', `/ip4/0.0.0.0/tcp/9/p2p/${peer}`])
      assert.equal(halt.code, EXIT_USAGE, halt.stderr)
    })
  })
})
