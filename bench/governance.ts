/**
 * `npm run bench:governance` — what governance costs under attack and how fast the kill
 * switch is, written to bench/governance.json. Never part of `npm test`.
 *
 * 1. refusal cost: time and Ed25519 verifications to refuse each of the worst 16 KiB
 *    forgeries (64 copies of one keyholder key, 64 non-keyholder keys, every keyholder with
 *    junk signatures) and a genuine but stale HALT, against a genuine HALT's full check
 * 2. forgery flood: a governance-only node in its own process (bench/gov-node.ts); 50
 *    attacker peers (libp2p nodes in this process) connect to it and, for --flood-s seconds,
 *    each publish forgeries on the governance topic, push them over /meshllm/gov-push and
 *    ask for catch-ups as fast as they are answered; the target's CPU (its own
 *    process.cpuUsage) during the flood against idle, and what it refused
 * 3. kill switch: an expert process (meshtest-c) and a router in this process generating;
 *    `meshllm halt --json` is started; time from starting the command to the generation's
 *    end, with the command's own phase breakdown (process start + imports, node, connect,
 *    catch-up, sign, push); repeated --halts times (a 2-of-3 RESUME between runs)
 */
import { spawn, execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { createMeshNode, connectBootstrap, type MeshNode } from '../src/node/node.js'
import { configToJson, defaultThresholds, type GovernanceConfig } from '../src/governance/config.js'
import { Kind, createEnvelope, encodeEnvelope, encodePayload, verificationStats } from '../src/governance/envelope.js'
import { generateKeyholderKey } from '../src/governance/keys.js'
import { GovernanceState } from '../src/governance/state.js'
import { GOV_PUSH_PROTOCOL, GOV_SYNC_PROTOCOL, govTopic } from '../src/governance/service.js'
import { spawnExpert, stopExpert } from '../src/peer/spawn.js'
import { Router } from '../src/router/router.js'
import { RouterTokenizer } from '../src/router/tokenizer.js'

const args = process.argv.slice(2)
const opt = (name: string, d: number): number => args.includes(name) ? Number(args[args.indexOf(name) + 1]) : d
const FLOOD_S = opt('--flood-s', 10)
const ATTACKERS = opt('--attackers', 50)
const HALTS = opt('--halts', 3)
/** which flood vectors to run (default all three): --vectors gossip,push,sync */
const VECTORS = new Set((args.includes('--vectors') ? args[args.indexOf('--vectors') + 1] : 'gossip,push,sync').split(','))
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined
const BIN = fileURLToPath(new URL('../../bin/meshllm.js', import.meta.url))
const NODE_SCRIPT = fileURLToPath(new URL('./gov-node.js', import.meta.url))
const log = (s: string): void => { process.stdout.write(s + '\n') }
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d

function forgeries (config: GovernanceConfig, keys: PrivateKey[], outsiders: PrivateKey[], version: number): Array<[string, Uint8Array]> {
  const now = Date.now()
  const payload = encodePayload({ meshId: config.meshId, kind: Kind.HALT, reason: 'x'.repeat(1024), version, issuedAtMs: now, expiresAtMs: now + 3_600_000 })
  const junk = (publicKey: Uint8Array): { publicKey: Uint8Array, signature: Uint8Array } => ({ publicKey, signature: new Uint8Array(64).fill(0xab) })
  const head = new Uint8Array(5); head[0] = 1; new DataView(head.buffer).setUint32(1, payload.length)
  const copies = Uint8Array.from([...head, ...payload, 64, ...Array.from({ length: 64 }, () => [...keys[0].publicKey.raw, ...new Uint8Array(64).fill(0xab)]).flat()])
  return [
    ['64 copies of one keyholder key', copies],
    ['64 non-keyholder keys', encodeEnvelope(payload, outsiders.map(k => junk(k.publicKey.raw)))],
    ['every keyholder, junk signatures', encodeEnvelope(payload, keys.map(k => junk(k.publicKey.raw)))]
  ]
}

async function refusalCost (config: GovernanceConfig, keys: PrivateKey[], outsiders: PrivateKey[]): Promise<unknown[]> {
  const out: unknown[] = []
  const st = new GovernanceState(config)
  const genuine = await createEnvelope({ meshId: config.meshId, kind: Kind.HALT, reason: 'bench', version: Date.now(), issuedAtMs: Date.now(), expiresAtMs: Date.now() + 3_600_000 }, [keys[0]])
  const cases: Array<[string, Uint8Array, GovernanceState]> = forgeries(config, keys, outsiders, Date.now()).map(([n, b]) => [n, b, st])
  const applied = new GovernanceState(config)
  await applied.apply(genuine)
  cases.push(['genuine HALT, stale (already in force)', genuine, applied])
  for (const [name, bytes, state] of cases) {
    const n = 2000
    const v0 = verificationStats.count
    const t0 = performance.now()
    let code = ''
    for (let i = 0; i < n; i++) { const r = await state.apply(bytes); code = r.accepted ? 'applied' : r.code }
    const us = (performance.now() - t0) * 1000 / n
    out.push({ case: name, bytes: bytes.length, code, microsecondsPerRefusal: round(us), verificationsPerRefusal: (verificationStats.count - v0) / n })
    log(`refuse ${name} (${bytes.length} B): ${code}, ${round(us)} µs, ${(verificationStats.count - v0) / n} verification(s)`)
  }
  // reference: a full check of a genuine HALT (one verification) on a fresh state
  const n = 500
  const t0 = performance.now()
  for (let i = 0; i < n; i++) await new GovernanceState(config).apply(genuine)
  const us = (performance.now() - t0) * 1000 / n
  out.push({ case: 'genuine HALT, applied (reference)', bytes: genuine.length, code: 'applied', microsecondsPerRefusal: round(us), verificationsPerRefusal: 1 })
  log(`apply a genuine HALT: ${round(us)} µs`)
  return out
}

interface Target { addr: string, cpu: () => Promise<{ user: number, system: number, rejected: any }>, stop: () => void }

async function startTarget (govFile: string): Promise<Target> {
  const child = spawn(process.execPath, [NODE_SCRIPT, govFile], { stdio: ['pipe', 'pipe', 'inherit'] })
  const rl = createInterface({ input: child.stdout! })
  const lines: string[] = []
  const waiters: Array<(l: string) => void> = []
  rl.on('line', (l) => { const w = waiters.shift(); if (w != null) w(l); else lines.push(l) })
  const next = async (): Promise<string> => lines.length > 0 ? lines.shift()! : await new Promise(resolve => waiters.push(resolve))
  const addr = await next()
  return {
    addr,
    cpu: async () => { child.stdin!.write('cpu\n'); return JSON.parse(await next()) },
    stop: () => { child.kill('SIGTERM') }
  }
}

async function flood (config: GovernanceConfig, keys: PrivateKey[], outsiders: PrivateKey[], govFile: string): Promise<unknown> {
  const target = await startTarget(govFile)
  const attackers: MeshNode[] = []
  for (let i = 0; i < ATTACKERS; i++) {
    const n = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'], dhtServer: false })
    await n.start()
    ;(n.services.pubsub as any).subscribe(govTopic(config.meshId))
    await connectBootstrap(n, [target.addr], 10_000, { waitForDht: false })
    attackers.push(n)
  }
  await new Promise(resolve => setTimeout(resolve, 3_000)) // subscriptions exchanged
  const idle0 = await target.cpu()
  await new Promise(resolve => setTimeout(resolve, FLOOD_S * 1000))
  const idle1 = await target.cpu()
  const idlePct = ((idle1.user + idle1.system) - (idle0.user + idle0.system)) / 1e4 / FLOOD_S
  log(`target idle with ${ATTACKERS} peers connected: ${round(idlePct, 2)} % of a core`)
  const bad = forgeries(config, keys, outsiders, Date.now() + 30 * 60_000)
  const targetPeer = attackers[0].getPeers()[0]
  const sent = { gossip: 0, push: 0, sync: 0 }
  const deadline = Date.now() + FLOOD_S * 1000
  const f0 = await target.cpu()
  await Promise.all(attackers.map(async (a, i) => {
    while (Date.now() < deadline) {
      const [, bytes] = bad[i % bad.length]
      if (VECTORS.has('gossip')) {
        await (a.services.pubsub as any).publish(govTopic(config.meshId), bytes).catch(() => {})
        sent.gossip++
      }
      if (VECTORS.has('push')) {
        try {
          const s = await a.dialProtocol(targetPeer, GOV_PUSH_PROTOCOL, { signal: AbortSignal.timeout(1_000) })
          const lp = lpStream(s)
          await lp.write(bytes, { signal: AbortSignal.timeout(1_000) })
          await lp.read({ signal: AbortSignal.timeout(1_000) })
          await s.close()
        } catch {}
      }
      if (VECTORS.has('push')) sent.push++
      if (VECTORS.has('sync')) {
        try {
          const s = await a.dialProtocol(targetPeer, GOV_SYNC_PROTOCOL, { signal: AbortSignal.timeout(1_000) })
          await lpStream(s).read({ signal: AbortSignal.timeout(1_000) }).catch(() => {})
          s.abort(new Error('done'))
        } catch {}
      }
      if (VECTORS.has('sync')) sent.sync++
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }))
  const f1 = await target.cpu()
  const floodPct = ((f1.user + f1.system) - (f0.user + f0.system)) / 1e4 / FLOOD_S
  log(`target under the flood: ${round(floodPct, 2)} % of a core; attackers sent ${JSON.stringify(sent)}; target refused ${JSON.stringify(f1.rejected)}; verifications ${f1.rejected.verifications}`)
  for (const a of attackers) await a.stop()
  target.stop()
  return { attackers: ATTACKERS, seconds: FLOOD_S, idleCpuPercent: round(idlePct, 2), floodCpuPercent: round(floodPct, 2), sent, refusedByTarget: f1.rejected }
}

function cli (a: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...a], { timeout: 60_000 }, (err: any, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

async function killSwitch (config: GovernanceConfig, govFile: string, keyFiles: string[]): Promise<unknown> {
  const expert = await spawnExpert('meshtest-c', ['--governance', govFile])
  const tokenizer = await RouterTokenizer.load('meshtest-c')
  const node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  await node.start()
  const { GovernanceService } = await import('../src/governance/service.js')
  const gov = new GovernanceService(node, new GovernanceState(config))
  await gov.start()
  await connectBootstrap(node, [expert.addr])
  const router = new Router(node, tokenizer, { haltReason: () => gov.haltReason })
  gov.on({ onHalt: (reason) => router.abortAll(reason) })
  const runs: any[] = []
  try {
    for (let i = 0; i < HALTS; i++) {
      const generation = router.generate('The kernel', { k: 1, maxTokens: 100_000, ignoreEos: true }).then(() => performance.now(), () => performance.now())
      await new Promise(resolve => setTimeout(resolve, 1_000))
      const t0 = performance.now()
      const r = await cli(['halt', '--governance', govFile, '--key', keyFiles[0], '--reason', `bench ${i}`, '--bootstrap', expert.addr, '--json'])
      const cliEnd = performance.now()
      const ended = await generation
      const j = JSON.parse(r.stdout.trim())
      const run = { commandToGenerationEndMs: round(ended - t0), commandWallMs: round(cliEnd - t0), phasesMs: j.phases, peers: j.peers }
      runs.push(run)
      log(`halt ${i}: generation ended ${run.commandToGenerationEndMs} ms after the command started (command ${run.commandWallMs} ms: ${JSON.stringify(j.phases)})`)
      const res = await cli(['resume', '--governance', govFile, '--key', keyFiles[1], '--key', keyFiles[2], '--bootstrap', expert.addr])
      if (res.code !== 0) throw new Error(`resume failed: ${res.stderr}`)
      while (gov.haltReason != null) await new Promise(resolve => setTimeout(resolve, 50))
    }
  } finally {
    await gov.stop(); await node.stop(); await tokenizer.close(); await stopExpert(expert)
  }
  return { runs, medianCommandToGenerationEndMs: median(runs.map(r => r.commandToGenerationEndMs)) }
}

const dir = await mkdtemp(join(tmpdir(), 'meshllm-bench-gov-'))
try {
  const keyFiles = [0, 1, 2].map(i => join(dir, `k${i}.key`))
  const keys = await Promise.all(keyFiles.map(async f => (await generateKeyholderKey(f)).privateKey))
  const outsiders = await Promise.all(Array.from({ length: 64 }, async () => await generateKeyPair('Ed25519')))
  const config: GovernanceConfig = { meshId: `bench-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 0, revertOnHalt: 0 }
  const govFile = join(dir, 'governance.json')
  await writeFile(govFile, JSON.stringify(configToJson(config)))
  if (ONLY === 'flood') {
    log(JSON.stringify(await flood(config, keys, outsiders, govFile)))
    process.exit(0)
  }
  const results = {
    date: new Date().toISOString(),
    machine: `${(await import('node:os')).cpus().length} cores`,
    refusal: await refusalCost(config, keys, outsiders),
    flood: await flood(config, keys, outsiders, govFile),
    killSwitch: await killSwitch(config, govFile, keyFiles)
  }
  await writeFile(new URL('../../bench/governance.json', import.meta.url), JSON.stringify(results, null, 2) + '\n')
  log('written bench/governance.json')
} finally {
  await rm(dir, { recursive: true, force: true })
}
process.exit(0)
