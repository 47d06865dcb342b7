/**
 * Faults and bad input on loopback TCP, with real expert processes: a stopped expert
 * (SIGSTOP), an expert restarted between generations, a dropped connection, a routing peer
 * killed under `--via`, load (BUSY refusals, many concurrent generations) and slot leaks.
 * Every test is bounded: a hang fails the test instead of stalling the suite.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { ExpertSession } from '../../src/router/expert-client.js'
import { Status } from '../../src/wire/types.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))
const PROMPT = Uint32Array.from([128000, 791, 10206])

function peerOf (addr: string): string {
  return addr.split('/p2p/')[1]
}

function alive (e: SpawnedExpert): boolean {
  return e.child.exitCode == null && e.child.signalCode == null
}

/** rejects after ms, naming what hung */
async function bounded<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} hung for ${ms} ms`)), ms) })])
  } finally {
    clearTimeout(timer)
  }
}

function isBusy (err: any): boolean {
  return err?.name === 'ExpertError' && /BUSY/.test(String(err.message))
}

describe('faults and bad input (expert processes on loopback)', function () {
  this.timeout(60_000)
  let a: SpawnedExpert, b: SpawnedExpert, c: SpawnedExpert
  /** --max-sessions 2, opens wait at most 5 s for a slot: queue, BUSY and leak checks */
  let small: SpawnedExpert
  /** restarted with the same --data-dir */
  let restartable: SpawnedExpert
  let restartDir: string
  let node: MeshNode
  let tokenizer: RouterTokenizer
  const all: SpawnedExpert[] = []

  const newRouter = (): Router => new Router(node, tokenizer, { requestTimeoutMs: 8_000 })
  const abc = (): string[] => [a, b, c].map(e => peerOf(e.addr))

  before(async function () {
    this.timeout(120_000)
    a = await spawnExpert('meshtest-c', ['--max-sessions', '8'])
    restartDir = await mkdtemp(join(tmpdir(), 'meshllm-restart-'))
    ;[b, c, small, restartable] = await Promise.all([
      spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--max-sessions', '8']),
      spawnExpert('meshtest-b', ['--bootstrap', a.addr, '--max-sessions', '8']),
      spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--max-sessions', '2', '--queue-timeout', '5000']),
      spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--data-dir', restartDir])
    ])
    all.push(a, b, c, small, restartable)
    node = await createMeshNode({ listen: [], dhtServer: false })
    await node.start()
    await connectBootstrap(node, [a.addr])
    tokenizer = await RouterTokenizer.load('meshtest-c')
    const r = newRouter()
    await waitFor(async () => (await r.experts(true)).compatible.length >= all.length, 30_000, 'the DHT to list every expert')
  })

  after(async function () {
    this.timeout(30_000)
    for (const e of all) if (alive(e)) e.child.kill('SIGCONT')
    await tokenizer?.close()
    await node?.stop()
    await Promise.all(all.map(stopExpert))
  })

  it('an expert stopped (SIGSTOP) mid-generation: the generation completes, nothing crashes', async () => {
    const router = newRouter()
    const victim = b
    const victimId = peerOf(victim.addr)
    let stoppedAt = -1
    let resume: NodeJS.Timeout | undefined
    try {
      const r = await bounded(router.generate('The kernel', {
        k: 2,
        maxTokens: 32,
        seed: 5,
        ignoreEos: true,
        policy: 'random',
        experts: abc(),
        onToken: (t) => {
          if (stoppedAt < 0 && t.index >= 2 && t.experts.includes(victimId)) {
            stoppedAt = t.index
            victim.child.kill('SIGSTOP')
            resume = setTimeout(() => victim.child.kill('SIGCONT'), 4_000)
          }
        }
      }), 45_000, 'generation with a stopped expert')
      assert.ok(stoppedAt >= 0, 'the victim served a step and was stopped')
      assert.equal(r.tokens, 32)
      assert.ok(r.steps.every(s => s.experts.length >= 1))
    } finally {
      clearTimeout(resume)
      victim.child.kill('SIGCONT')
    }
    assert.ok(all.every(alive), 'no expert process died')
    // the resumed expert serves again
    const again = await bounded(newRouter().generate('git', { k: 1, maxTokens: 4, ignoreEos: true, experts: [victimId] }), 30_000, 'generation on the resumed expert')
    assert.equal(again.tokens, 4)
  })

  it('an expert restarted (same --data-dir, same peer id) between two generations: the second succeeds', async () => {
    const id = peerOf(restartable.addr)
    const router = newRouter()
    const first = await bounded(router.generate('The', { k: 1, maxTokens: 6, ignoreEos: true, experts: [id] }), 30_000, 'first generation')
    assert.equal(first.tokens, 6)
    await stopExpert(restartable)
    const again = await spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--data-dir', restartDir])
    all[all.indexOf(restartable)] = again
    restartable = again
    assert.equal(peerOf(again.addr), id, 'the restarted expert keeps its peer id')
    const second = await bounded(router.generate('The', { k: 1, maxTokens: 6, ignoreEos: true, experts: [id] }), 30_000, 'second generation')
    assert.equal(second.tokens, 6)
    assert.deepEqual(second.experts, [id])
  })

  it('a dropped connection (hangUp on the router side) mid-generation: the generation completes', async () => {
    const router = newRouter()
    let droppedAt = -1
    let victimId = ''
    let hangUp: Promise<void> | undefined
    const r = await bounded(router.generate('The kernel', {
      k: 2,
      maxTokens: 32,
      seed: 9,
      ignoreEos: true,
      policy: 'random',
      experts: abc().slice(1), // not the bootstrap peer a: the router keeps its DHT link
      onToken: (t) => {
        if (droppedAt < 0 && t.index >= 3) {
          droppedAt = t.index
          victimId = t.experts[0]
          hangUp = node.hangUp(peerIdFromString(victimId))
        }
      }
    }), 45_000, 'generation with a dropped connection')
    await hangUp
    assert.ok(droppedAt >= 0)
    assert.equal(r.tokens, 32)
    assert.ok(r.steps.every(s => s.experts.length >= 1))
    assert.ok(all.every(alive), 'no expert process died')
  })

  /** a --via client streaming from a fresh routing peer; `fault` hits the routing peer at the first token */
  async function viaFault (fault: 'SIGKILL' | 'SIGSTOP', bound: number): Promise<{ code: number | null, signal: NodeJS.Signals | null, stderr: string, faultedAfterMs: number, exitedAfterMs: number }> {
    const routing = await spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--max-sessions', '4'])
    try {
      const client = spawn(process.execPath, [BIN, 'generate', 'The kernel', '--via', routing.addr, '-k', '2', '--max-tokens', '2000', '--seed', '1', '--temperature', '0.9'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      let faultedAt = -1
      const t0 = Date.now()
      const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => client.once('exit', (code, signal) => resolve({ code, signal })))
      client.stderr.on('data', (d) => { stderr += String(d) })
      client.stdout.on('data', (d) => {
        stdout += String(d)
        if (faultedAt < 0 && stdout.length > 0) { faultedAt = Date.now(); routing.child.kill(fault) }
      })
      let res
      try {
        res = await bounded(exited, bound, `the --via client after its routing peer got ${fault}`)
      } finally {
        if (client.exitCode == null && client.signalCode == null) client.kill('SIGKILL')
      }
      assert.ok(faultedAt >= 0, `the routing peer streamed tokens before the fault (stderr: ${stderr})`)
      return { ...res, stderr, faultedAfterMs: faultedAt - t0, exitedAfterMs: Date.now() - faultedAt }
    } finally {
      if (fault === 'SIGSTOP') routing.child.kill('SIGCONT')
      await stopExpert(routing)
    }
  }

  function oneErrorLine (stderr: string): string {
    const lines = stderr.trim().split('\n').filter(l => !l.startsWith('warning:'))
    assert.equal(lines.length, 1, `one error line: ${stderr}`)
    return lines[0]
  }

  it('a routing peer killed (SIGKILL) under --via: the client exits non-zero with one error line, no hang', async () => {
    const res = await viaFault('SIGKILL', 40_000)
    assert.equal(res.signal, null)
    assert.notEqual(res.code, 0, `client exit code (stderr: ${res.stderr})`)
    assert.match(oneErrorLine(res.stderr), /^meshllm: the routing peer closed the stream/)
  })

  it('a routing peer frozen (SIGSTOP) under --via: the client notices the missing ping replies and exits with one error line', async () => {
    const res = await viaFault('SIGSTOP', 40_000)
    console.log(`      frozen routing peer: client exited ${res.exitedAfterMs} ms after the SIGSTOP`)
    assert.equal(res.signal, null)
    assert.notEqual(res.code, 0, `client exit code (stderr: ${res.stderr})`)
    assert.match(oneErrorLine(res.stderr), /^meshllm: the routing peer stopped responding/)
  })

  it('an expert with --max-sessions 2 admits 2 of 20 concurrent opens, queues 8 (4 × its per-peer quota of 2), refuses 10 with BUSY at once, and admits the queued ones as sessions close', async () => {
    await node.dial(multiaddr(small.addr))
    const id = peerIdFromString(peerOf(small.addr))
    const sessions = await Promise.all(Array.from({ length: 20 }, async () => await ExpertSession.connect(node, id, { signal: AbortSignal.timeout(10_000) })))
    const outcome: Array<'ok' | 'busy' | Error | undefined> = sessions.map(() => undefined)
    const opens = sessions.map(async (s, i) => {
      try {
        await s.open(PROMPT, tokenizer.fingerprint, { signal: AbortSignal.timeout(20_000) })
        outcome[i] = 'ok'
      } catch (err) {
        outcome[i] = isBusy(err) ? 'busy' : err as Error
      }
    })
    const count = (o: 'ok' | 'busy'): number => outcome.filter(x => x === o).length
    try {
      await waitFor(() => count('ok') + count('busy') >= 12, 5_000, '2 admitted and 10 refused')
      for (const o of outcome) assert.ok(!(o instanceof Error), `admitted, queued or BUSY, got ${o instanceof Error ? `${o.name}: ${o.message}` : ''}`)
      assert.equal(count('ok'), 2, 'exactly --max-sessions admitted at once')
      assert.equal(count('busy'), 10, 'the queue is full after 8')
      // the admitted ones work; each that closes lets one queued open in, first come first served
      const closed = new Set<number>()
      for (let round = 0; round < 4; round++) {
        const admitted = outcome.flatMap((o, i) => o === 'ok' && !closed.has(i) ? [i] : [])
        assert.equal(admitted.length, 2, `round ${round}: both slots in use`)
        for (const i of admitted) {
          const f = await sessions[i].step(Uint32Array.from([279]), { signal: AbortSignal.timeout(10_000) })
          assert.equal(f.position, PROMPT.length + 1)
          await sessions[i].close()
          closed.add(i)
        }
        await waitFor(() => count('ok') === 2 * (round + 2), 5_000, `round ${round}: two queued opens admitted`)
      }
      await Promise.all(opens)
      assert.equal(count('ok'), 10)
      assert.equal(count('busy'), 10)
    } finally {
      await Promise.all(sessions.map(async s => await s.close()))
      await Promise.all(opens)
    }
    // and new sessions are admitted again
    const fresh = await openConcurrently(node, id, 2, tokenizer.fingerprint)
    assert.equal(fresh.length, 2)
    await Promise.all(fresh.map(async s => await s.close()))
  })

  it('an expert that answers BUSY at once (--max-sessions 1 --queue-timeout 0): concurrent generations wait and ask again instead of failing; past busyWaitMs, BusyError', async () => {
    const one = await spawnExpert('meshtest-c', ['--bootstrap', a.addr, '--max-sessions', '1', '--queue-timeout', '0'])
    try {
      const id = peerOf(one.addr)
      const router = newRouter()
      await waitFor(async () => (await router.experts(true)).compatible.some(r => r.peerId.toString() === id), 30_000, 'the DHT to list the new expert')
      const busy: string[] = []
      router.observers.add({ onExpertRequest: (e) => { if (e.status === Status.BUSY) busy.push(e.expert) } })
      const results = await bounded(Promise.all(Array.from({ length: 3 }, async (_x, i) =>
        await router.generate('The kernel', { k: 1, maxTokens: 6, seed: i, ignoreEos: true, experts: [id] }))), 45_000, 'three generations sharing one slot')
      for (const r of results) assert.equal(r.tokens, 6)
      assert.ok(busy.length >= 2, `the expert answered BUSY (${busy.length} times) and was asked again`)
      // the one slot held by someone else past the router's busyWaitMs: a named error, after the wait
      await node.dial(multiaddr(one.addr))
      const [holder] = await openConcurrently(node, peerIdFromString(id), 1, tokenizer.fingerprint)
      try {
        const t0 = performance.now()
        const impatient = new Router(node, tokenizer, { requestTimeoutMs: 8_000, busyWaitMs: 1_000 })
        await assert.rejects(impatient.generate('The kernel', { k: 1, maxTokens: 2, experts: [id] }), { name: 'BusyError' })
        const waited = performance.now() - t0
        assert.ok(waited >= 1_000 && waited < 10_000, `failed after waiting ${waited.toFixed(0)} ms`)
      } finally {
        await holder.close()
      }
    } finally {
      await stopExpert(one)
    }
  })

  it('50 concurrent generations over 3 experts (2 sessions each for this router): every one completes, none fails while the experts live', async () => {
    const router = newRouter()
    const t0 = performance.now()
    const results = await bounded(Promise.allSettled(Array.from({ length: 50 }, async (_x, i) =>
      await router.generate('The kernel', { k: 2, maxTokens: 8, seed: i, ignoreEos: true, experts: abc() }))), 90_000, '50 concurrent generations')
    const failed = results.flatMap(r => r.status === 'rejected' ? [`${(r.reason as Error)?.name}: ${(r.reason as Error)?.message}`] : [])
    assert.deepEqual(failed, [], 'the experts queue the opens or answer BUSY, and the router waits for them: nobody fails')
    for (const r of results) if (r.status === 'fulfilled') assert.equal(r.value.tokens, 8)
    console.log(`      50 concurrent generations done in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    assert.ok(all.every(alive), 'no expert process died')
    // the storm leaves the mesh serving: BUSY opened no circuit, so a generation right after it completes
    const after = await router.generate('The kernel', { k: 2, maxTokens: 8, seed: 99, ignoreEos: true, experts: abc() })
    assert.equal(after.tokens, 8)
  })

  it('1,000 short sessions leak no slot, file handle, stream or memory: the expert still admits --max-sessions sessions', async () => {
    await node.dial(multiaddr(small.addr))
    const id = peerIdFromString(peerOf(small.addr))
    const pid = small.child.pid as number
    const streams = (): number => node.getConnections(id).reduce((n, c) => n + c.streams.length, 0)
    let before: { fds: number, rssMb: number, streams: number } | undefined
    for (let i = 0; i < 1000; i++) {
      if (i === 50) before = { fds: openFds(pid), rssMb: rssMb(pid), streams: streams() } // after warm-up
      // one session at a time: with 2 slots, BUSY here means slots are leaking
      const [s] = await openConcurrently(node, id, 1, tokenizer.fingerprint)
      await s.step(Uint32Array.from([279 + (i % 50)]), { signal: AbortSignal.timeout(10_000) })
      if (i % 3 === 2) s.abort(new Error('router gone')) // some end with a reset, not a close
      else await s.close()
    }
    // a closed or reset stream is released on both sides within a moment
    await waitFor(async () => streams() <= (before?.streams ?? 0), 5_000, 'the router-side streams to be released')
    const after = { fds: openFds(pid), rssMb: rssMb(pid), streams: streams() }
    console.log(`      after 1,000 sessions: expert fds ${before?.fds} → ${after.fds}, RSS ${before?.rssMb.toFixed(0)} → ${after.rssMb.toFixed(0)} MB, router streams ${before?.streams} → ${after.streams}`)
    assert.ok(after.fds <= (before?.fds ?? 0) + 2, `expert file handles ${before?.fds} → ${after.fds}`)
    assert.ok(after.rssMb - (before?.rssMb ?? 0) < 64, `expert RSS grew ${(after.rssMb - (before?.rssMb ?? 0)).toFixed(0)} MB over 950 sessions`)
    const sessions = await openConcurrently(node, id, 2, tokenizer.fingerprint)
    assert.equal(sessions.length, 2, 'both slots are free again')
    // and the limit still holds: one more open waits out the queue's 5 s and is refused
    const extra = await ExpertSession.connect(node, id, { signal: AbortSignal.timeout(10_000) })
    await assert.rejects(extra.open(PROMPT, tokenizer.fingerprint, { signal: AbortSignal.timeout(10_000) }), isBusy)
    await extra.close()
    await Promise.all(sessions.map(async s => await s.close()))
    assert.ok(alive(small))
  })
})

/** open file descriptors of a process (Linux /proc) */
function openFds (pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** resident set size of a process in MB (Linux /proc) */
function rssMb (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m == null ? 0 : Number(m[1]) / 1024
}

/**
 * Opens n sessions at once; a slot freed by a just-closed stream may take a moment to be
 * released, so BUSY is retried for a few seconds (a leaked slot stays BUSY and fails).
 */
async function openConcurrently (node: MeshNode, id: ReturnType<typeof peerIdFromString>, n: number, fingerprint: Uint8Array): Promise<ExpertSession[]> {
  const deadline = Date.now() + 5_000
  while (true) {
    const sessions = await Promise.all(Array.from({ length: n }, async () => await ExpertSession.connect(node, id, { signal: AbortSignal.timeout(10_000) })))
    const res = await Promise.allSettled(sessions.map(async s => await s.open(PROMPT, fingerprint, { signal: AbortSignal.timeout(10_000) })))
    if (res.every(r => r.status === 'fulfilled')) return sessions
    const other = res.find(r => r.status === 'rejected' && !isBusy(r.reason))
    await Promise.all(sessions.map(async s => await s.close()))
    if (other != null) throw (other as PromiseRejectedResult).reason
    if (Date.now() > deadline) throw new Error(`only ${res.filter(r => r.status === 'fulfilled').length} of ${n} sessions admitted: a slot leaked`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
