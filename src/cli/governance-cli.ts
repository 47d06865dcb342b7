/**
 * Keyholder commands: keys generate, governance init|show, halt, resume, vote, phase, sign,
 * submit. Keyholder private keys are read only here, never by `join`.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { createMeshNode, connectBootstrap, type MeshNode } from '../node/node.js'
import { generateKeyholderKey, loadKeyholderKey, formatPublicKey, canonicalPublicKey } from '../governance/keys.js'
import { configToJson, configDigest, defaultConfig, defaultThresholds, loadConfig, validateConfig, type GovernanceConfig } from '../governance/config.js'
import { Kind, addSignatures, createEnvelope, decodeEnvelope, type Message } from '../governance/envelope.js'
import { GovernanceState } from '../governance/state.js'
import { GovernanceService } from '../governance/service.js'
import { GovernanceKeyError } from '../governance/errors.js'

type Parse = (args: string[], options: any) => { values: Record<string, any>, positionals: string[] }

/** default lifetime of a keyholder message */
const DEFAULT_TTL_MS = 7 * 24 * 3_600_000

export async function governanceConfigFrom (path: string | undefined, quiet = false): Promise<GovernanceConfig> {
  if (path != null) return await loadConfig(path)
  if (!quiet) process.stderr.write('warning: no --governance file: using the built-in DEVELOPMENT governance (mesh "meshllm-dev"), whose keyholder keys are public (test/fixtures/keys). Never use it for a real mesh.\n')
  return defaultConfig()
}

/** A short-lived client node joined to the mesh's governance topic, caught up from its peers. */
export async function governanceClient (config: GovernanceConfig, bootstrap: string[]): Promise<{ node: MeshNode, gov: GovernanceService, close: () => Promise<void> }> {
  const node = await createMeshNode({ listen: [], dhtServer: false })
  await node.start()
  const gov = new GovernanceService(node, new GovernanceState(config))
  await gov.start()
  try {
    await connectBootstrap(node, bootstrap)
    await gov.syncAll()
  } catch (err) {
    await gov.stop(); await node.stop()
    throw err
  }
  return { node, gov, close: async () => { await gov.stop(); await node.stop() } }
}

/** Waits until some peer subscribes to the governance topic (so the publish reaches the mesh). */
async function waitForTopicPeers (gov: GovernanceService, timeoutMs = 5_000): Promise<number> {
  const pubsub = gov.node.services.pubsub as any
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const n = pubsub.getSubscribers(gov.topic).length
    if (n > 0) return n
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return 0
}

async function publishEnvelope (bytes: Uint8Array, config: GovernanceConfig, bootstrap: string[]): Promise<void> {
  const { gov, close } = await governanceClient(config, bootstrap)
  try {
    const peers = await waitForTopicPeers(gov)
    if (peers === 0) throw new Error('no mesh peer subscribed to the governance topic: nothing published')
    const r = await gov.publish(bytes)
    if (!r.accepted) throw new Error(`refused: ${r.reason}`)
    const m = decodeEnvelope(bytes).message
    // give gossipsub a moment to flush before the client node stops
    await new Promise(resolve => setTimeout(resolve, 300))
    process.stdout.write(`${Kind[m.kind]} version ${m.version} published to ${r.recipients} peer(s) on mesh "${m.meshId}"\n`)
  } finally {
    await close()
  }
}

function needBootstrap (v: Record<string, any>): string[] {
  const b: string[] = v.bootstrap ?? []
  if (b.length === 0) throw Object.assign(new Error('needs --bootstrap <multiaddr>'), { name: 'UsageError' })
  return b
}

async function keysFrom (paths: string[] | undefined): Promise<any[]> {
  if (paths == null || paths.length === 0) throw new GovernanceKeyError('needs --key <keyholder key file>')
  return await Promise.all(paths.map(async p => (await loadKeyholderKey(p)).privateKey))
}

function baseMessage (config: GovernanceConfig, version: number, ttlMs = DEFAULT_TTL_MS): Pick<Message, 'meshId' | 'version' | 'issuedAtMs' | 'expiresAtMs'> {
  const now = Date.now()
  return { meshId: config.meshId, version: Math.max(version, now), issuedAtMs: now, expiresAtMs: now + ttlMs }
}

const COMMON = {
  governance: { type: 'string' },
  bootstrap: { type: 'string', multiple: true },
  key: { type: 'string', multiple: true },
  reason: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' }
} as const

export async function keysCommand (args: string[], parse: Parse): Promise<void> {
  const [sub, ...rest] = args
  if (sub !== 'generate') throw Object.assign(new Error('usage: meshllm keys generate --out <file>'), { name: 'UsageError' })
  const { values } = parse(rest, { out: { type: 'string' } })
  if (values.out == null) throw Object.assign(new Error('keys generate needs --out <file>'), { name: 'UsageError' })
  const k = await generateKeyholderKey(values.out)
  process.stdout.write(formatPublicKey(k.publicKey) + '\n')
}

export async function governanceCommand (args: string[], parse: Parse): Promise<void> {
  const [sub, ...rest] = args
  if (sub === 'init') {
    const { values } = parse(rest, { keyholder: { type: 'string', multiple: true }, out: { type: 'string' }, 'mesh-id': { type: 'string' }, 'review-hours': { type: 'string' } })
    const keys: string[] = values.keyholder ?? []
    if (keys.length === 0 || values.out == null) throw Object.assign(new Error('governance init needs --keyholder <public key>… and --out <file>'), { name: 'UsageError' })
    const config = validateConfig({
      meshId: values['mesh-id'] ?? `meshllm-${Date.now().toString(36)}`,
      keyholders: keys.map(k => ({ publicKey: canonicalPublicKey(k) })),
      thresholds: defaultThresholds(keys.length),
      reviewPeriodMs: Number(values['review-hours'] ?? 24) * 3_600_000,
      revertOnHalt: 3
    })
    await writeFile(values.out, JSON.stringify(configToJson(config), null, 2) + '\n', { flag: 'wx' })
    process.stdout.write(`governance file ${values.out}: mesh "${config.meshId}", ${keys.length} keyholder(s), digest ${configDigest(config)}\n`)
    return
  }
  if (sub === 'show') {
    const { values } = parse(rest, COMMON)
    const config = await governanceConfigFrom(values.governance, values.json === true)
    const out: any = { config: configToJson(config), digest: configDigest(config) }
    if ((values.bootstrap ?? []).length > 0) {
      const { gov, close } = await governanceClient(config, values.bootstrap)
      out.state = gov.state.snapshot()
      await close()
    }
    process.stdout.write(JSON.stringify(out, null, values.json === true ? 0 : 2) + '\n')
    return
  }
  throw Object.assign(new Error('usage: meshllm governance init|show …'), { name: 'UsageError' })
}

/** meshllm halt | resume | vote | phase: build, sign with the given keys, publish */
export async function keyholderCommand (cmd: 'halt' | 'resume' | 'vote' | 'phase', args: string[], parse: Parse): Promise<void> {
  const { values, positionals } = parse(args, { ...COMMON, approve: { type: 'boolean' }, reject: { type: 'boolean' }, lifts: { type: 'string' } })
  const config = await governanceConfigFrom(values.governance)
  const keys = await keysFrom(values.key)
  const bootstrap = needBootstrap(values)
  // learn the current version and halt from the mesh first
  const { gov, close } = await governanceClient(config, bootstrap)
  let bytes: Uint8Array
  try {
    const st = gov.state
    const base = baseMessage(st.config, st.version + 1)
    if (cmd === 'halt') {
      bytes = await createEnvelope({ ...base, kind: Kind.HALT, reason: values.reason ?? 'halted by keyholder' }, keys)
    } else if (cmd === 'resume') {
      const lifts = values.lifts != null ? Number(values.lifts) : st.halted?.version
      if (lifts == null) throw new Error('the mesh is not halted: nothing to resume')
      bytes = await createEnvelope({ ...base, kind: Kind.RESUME, liftsVersion: lifts, reason: values.reason ?? 'resumed by keyholders' }, keys)
    } else if (cmd === 'vote') {
      const id = positionals[0]
      if (id == null || !/^[0-9a-f]{64}$/.test(id)) throw Object.assign(new Error('vote needs a motion id (64 hex digits)'), { name: 'UsageError' })
      if ((values.approve === true) === (values.reject === true)) throw Object.assign(new Error('vote needs exactly one of --approve / --reject'), { name: 'UsageError' })
      bytes = await createEnvelope({ ...baseMessage(st.config, Date.now()), kind: Kind.VOTE, motionId: Buffer.from(id, 'hex'), approve: values.approve === true }, keys)
    } else {
      const phase = Number(positionals[0])
      if (!Number.isInteger(phase) || phase < 0 || phase > 4) throw Object.assign(new Error('phase needs a phase number 0–4'), { name: 'UsageError' })
      bytes = await createEnvelope({ ...base, kind: Kind.PHASE, phase }, keys)
    }
  } finally {
    await close()
  }
  await publishEnvelope(bytes, config, bootstrap)
}

/**
 * Offline signature collection:
 *   meshllm sign halt|resume|vote|phase [args] --key k1 --out msg.gov   (create, signed by k1)
 *   meshllm sign --in msg.gov --key k2 --out msg.gov                    (add a signature)
 */
export async function signCommand (args: string[], parse: Parse): Promise<void> {
  const { values, positionals } = parse(args, { ...COMMON, in: { type: 'string' }, approve: { type: 'boolean' }, reject: { type: 'boolean' }, lifts: { type: 'string' }, version: { type: 'string' }, 'ttl-hours': { type: 'string' } })
  const keys = await keysFrom(values.key)
  if (values.out == null) throw Object.assign(new Error('sign needs --out <file>'), { name: 'UsageError' })
  let bytes: Uint8Array
  if (values.in != null) {
    bytes = await addSignatures(Uint8Array.from(await readFile(values.in)), keys)
  } else {
    const config = await governanceConfigFrom(values.governance, true)
    const [kind, arg] = positionals
    const base = baseMessage(config, values.version != null ? Number(values.version) : Date.now(), values['ttl-hours'] != null ? Number(values['ttl-hours']) * 3_600_000 : DEFAULT_TTL_MS)
    let m: Message
    if (kind === 'halt') m = { ...base, kind: Kind.HALT, reason: values.reason ?? 'halted by keyholder' }
    else if (kind === 'resume') {
      if (values.lifts == null) throw Object.assign(new Error('sign resume needs --lifts <halt version>'), { name: 'UsageError' })
      m = { ...base, kind: Kind.RESUME, liftsVersion: Number(values.lifts), reason: values.reason ?? 'resumed by keyholders' }
    } else if (kind === 'vote') m = { ...base, kind: Kind.VOTE, motionId: Buffer.from(arg ?? '', 'hex'), approve: values.approve === true }
    else if (kind === 'phase') m = { ...base, kind: Kind.PHASE, phase: Number(arg) }
    else throw Object.assign(new Error('sign needs a kind: halt | resume | vote | phase, or --in <file>'), { name: 'UsageError' })
    bytes = await createEnvelope(m, keys)
  }
  await writeFile(values.out, bytes)
  const env = decodeEnvelope(bytes)
  process.stdout.write(`${values.out}: ${Kind[env.message.kind]} version ${env.message.version}, ${env.signatures.length} signature(s)\n`)
}

export async function submitCommand (args: string[], parse: Parse): Promise<void> {
  const { values, positionals } = parse(args, COMMON)
  if (positionals[0] == null) throw Object.assign(new Error('submit needs a signed message file'), { name: 'UsageError' })
  const config = await governanceConfigFrom(values.governance)
  await publishEnvelope(Uint8Array.from(await readFile(positionals[0])), config, needBootstrap(values))
}
