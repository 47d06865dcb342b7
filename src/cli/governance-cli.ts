/**
 * Keyholder commands: keys generate, governance init|show, halt, resume, vote, phase, sign,
 * submit. Keyholder private keys are read only here, never by `join`.
 */
import { lstat, mkdir, readFile, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join as joinPath } from 'node:path'
import { createMeshNode, connectBootstrap, parseMultiaddr, type MeshNode } from '../node/node.js'
import { NoPeersError, errorCode } from '../util/errors.js'
import { generateKeyholderKey, loadKeyholderKey, formatPublicKey, canonicalPublicKey } from '../governance/keys.js'
import { configToJson, configDigest, defaultConfig, isDevGovernance, defaultThresholds, loadConfig, validateConfig, type GovernanceConfig } from '../governance/config.js'
import { Kind, MAX_LIFETIME_MS, addSignatures, createEnvelope, decodeEnvelope, type Message } from '../governance/envelope.js'
import { GovernanceState } from '../governance/state.js'
import { GovernanceService } from '../governance/service.js'
import { DevGovernanceError, GovernanceKeyError } from '../governance/errors.js'
import { UsageError } from './errors.js'
import { intOption, type Values } from './args.js'
import { KEYHOLDER_DEFAULTS } from './defaults.js'

const { haltReason: DEFAULT_HALT_REASON, resumeReason: DEFAULT_RESUME_REASON } = KEYHOLDER_DEFAULTS

export async function governanceConfigFrom (path: string | undefined, quiet = false): Promise<GovernanceConfig> {
  if (path != null) return await loadConfig(path)
  if (!quiet) process.stderr.write('warning: no --governance file: using the built-in DEVELOPMENT governance (mesh "meshllm-dev"), whose keyholder keys are public (test/fixtures/keys). Never use it for a real mesh.\n')
  return defaultConfig()
}

/** environment variable that lets the development governance leave loopback (test networks only) */
export const UNSAFE_DEV_GOVERNANCE_ENV = 'MESHLLM_UNSAFE_DEV_GOVERNANCE'

/** a multiaddr that stays on this machine: /ip4/127.x, /ip6/::1, /dns(4,6)/localhost */
export function isLoopbackMultiaddr (addr: string): boolean {
  const c = parseMultiaddr(addr).getComponents()[0]
  if (c == null) return false
  if (c.name === 'ip4') return c.value?.startsWith('127.') === true
  if (c.name === 'ip6') return c.value === '::1' || c.value === '0:0:0:0:0:0:0:1'
  if (c.name === 'dns' || c.name === 'dns4' || c.name === 'dns6') return c.value === 'localhost'
  return false
}

/**
 * The built-in development governance's private keys are published (test/fixtures/keys):
 * on any address other than loopback anyone could halt that mesh for good or hand it to
 * their own keys. Every command refuses it there (DevGovernanceError, exit 2) unless
 * MESHLLM_UNSAFE_DEV_GOVERNANCE=1 is set for a throwaway test network.
 */
export function refuseDevGovernanceOffLoopback (config: GovernanceConfig, addrs: string[]): void {
  if (!isDevGovernance(config)) return
  const outside = addrs.filter(a => !isLoopbackMultiaddr(a))
  if (outside.length === 0) return
  if (process.env[UNSAFE_DEV_GOVERNANCE_ENV] === '1') {
    process.stderr.write(`warning: ${UNSAFE_DEV_GOVERNANCE_ENV}=1: the DEVELOPMENT governance on ${outside[0]}: anyone can halt this mesh or take it over\n`)
    return
  }
  throw new DevGovernanceError(`the built-in development governance (public keys) cannot be used off loopback (${outside[0]}): pass --governance <file> (meshllm governance init)`)
}

/** A short-lived client node joined to the mesh's governance, caught up from its bootstrap peers. */
export async function governanceClient (config: GovernanceConfig, bootstrap: string[], timings?: Timings, options: { minimal?: boolean, requireCatchUp?: boolean } = {}): Promise<{ node: MeshNode, gov: GovernanceService, close: () => Promise<void> }> {
  refuseDevGovernanceOffLoopback(config, bootstrap)
  const node = await createMeshNode({ listen: [], dhtServer: false, minimal: options.minimal })
  await node.start()
  const gov = new GovernanceService(node, new GovernanceState(config))
  await gov.start()
  timings?.mark('node')
  try {
    // a keyholder tool needs connections, not the DHT: no wait for a routing table
    await connectBootstrap(node, bootstrap, 10_000, { waitForDht: false })
    timings?.mark('connect')
    const sync = await gov.catchUp(10_000)
    timings?.mark('catch-up')
    // a keyholder message is numbered from the state learnt here: without any answer, "not
    // halted" or version 0 would be this tool's guess, not the mesh's state
    if (options.requireCatchUp === true && sync.answered === 0) throw new NoPeersError(`no mesh peer answered the governance catch-up within 10 s (${sync.peers} connected): the mesh's version and halt are unknown`)
  } catch (err) {
    await gov.stop(); await node.stop()
    throw err
  }
  return { node, gov, close: async () => { await gov.stop(); await node.stop() } }
}

/** Where the time of a keyholder command went (ms per phase, from process start). */
export class Timings {
  private last: number
  readonly phases: Array<[string, number]> = []
  constructor () {
    // performance.now() counts from the process's start: the first phase is Node + imports
    this.last = 0
    this.mark('start')
  }

  mark (phase: string): void {
    const now = performance.now()
    this.phases.push([phase, Math.round(now - this.last)])
    this.last = now
  }

  get total (): number { return Math.round(this.last) }
  toString (): string { return `${this.total} ms (${this.phases.map(([p, ms]) => `${p} ${ms}`).join(', ')})` }
}

/** The mesh did not take a keyholder's message: refused here or by every peer that answered. */
export class GovernanceRefusedError extends Error {
  static override name = 'GovernanceRefusedError'
  override name = 'GovernanceRefusedError'
  constructor (readonly code: string, message: string) { super(message) }
}

/**
 * Submits a signed envelope and tells the truth: applied (by how many peers that answered)
 * or refused and why. Throws GovernanceRefusedError when this client's own check refuses it
 * (stale, expired, issued in the future, below threshold, …) or when every mesh peer that
 * answered refused it, NoPeersError when no peer answered at all.
 */
async function publishEnvelope (bytes: Uint8Array, config: GovernanceConfig, bootstrap: string[], json: boolean, timings = new Timings()): Promise<void> {
  const { gov, close } = await governanceClient(config, bootstrap, timings, { minimal: true })
  try {
    await submitAndReport(gov, bytes, json, timings)
  } finally {
    await close()
  }
}

async function submitAndReport (gov: GovernanceService, bytes: Uint8Array, json: boolean, timings: Timings): Promise<void> {
  const m = decodeEnvelope(bytes).message
  const r = await gov.submit(bytes)
  timings.mark('push')
  // 'known': the peer had it already (gossip got there first): applied there all the same
  const applied = (r.peers.applied ?? 0) + (r.peers.known ?? 0)
  const answered = Object.entries(r.peers).filter(([a]) => a !== 'no-answer').reduce((n, [, c]) => n + (c ?? 0), 0)
  const refusedBy = Object.entries(r.peers).filter(([a]) => a !== 'applied' && a !== 'known' && a !== 'no-answer').map(([a, c]) => `${c} ${a}`)
  if (json) process.stdout.write(JSON.stringify({ kind: Kind[m.kind], version: m.version, applied: r.applied, code: r.code, reason: r.reason, peers: r.peers, gossipRecipients: r.gossipRecipients, ms: timings.total, phases: Object.fromEntries(timings.phases) }) + '\n')
  if (!r.applied) throw new GovernanceRefusedError(r.code ?? 'refused', `${Kind[m.kind]} version ${m.version} refused: ${r.code}: ${r.reason}`)
  if (answered === 0 && r.gossipRecipients === 0) throw new NoPeersError(`${Kind[m.kind]} version ${m.version}: no mesh peer answered; nothing was applied`)
  if (answered > 0 && applied === 0) throw new GovernanceRefusedError(Object.keys(r.peers).find(a => a !== 'no-answer') ?? 'refused', `${Kind[m.kind]} version ${m.version} refused by every peer that answered (${refusedBy.join(', ')})`)
  if (!json) {
    process.stdout.write(`${Kind[m.kind]} version ${m.version} applied by ${applied} of ${answered} peer(s) that answered${refusedBy.length > 0 ? ` (refused by ${refusedBy.join(', ')})` : ''}${(r.peers['no-answer'] ?? 0) > 0 ? `, ${r.peers['no-answer']} did not answer` : ''}; gossiped to ${r.gossipRecipients} peer(s) on mesh "${m.meshId}"\n`)
    process.stderr.write(`took ${timings.toString()}\n`)
  }
}

function needBootstrap (v: Record<string, any>): string[] {
  const b: string[] = v.bootstrap ?? []
  if (b.length === 0) throw new UsageError('needs --bootstrap <multiaddr>')
  return b
}

async function keysFrom (paths: string[] | undefined): Promise<any[]> {
  if (paths == null || paths.length === 0) throw new GovernanceKeyError('needs --key <keyholder key file>')
  return await Promise.all(paths.map(async p => (await loadKeyholderKey(p)).privateKey))
}

function baseMessage (config: GovernanceConfig, version: number, ttlMs = KEYHOLDER_DEFAULTS.ttlHours * 3_600_000): Pick<Message, 'meshId' | 'version' | 'issuedAtMs' | 'expiresAtMs'> {
  const now = Date.now()
  return { meshId: config.meshId, version: Math.max(version, now), issuedAtMs: now, expiresAtMs: now + ttlMs }
}

/**
 * Where `keys generate` writes without --out: $MESHLLM_HOME/keys/<name>.key, else
 * ${XDG_DATA_HOME:-~/.local/share}/meshllm/keys/<name>.key (next to the node's data
 * directory, src/node/data-dir.ts; the directory is created with mode 700).
 */
export function defaultKeyFile (name: string, env: NodeJS.ProcessEnv = process.env): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new UsageError(`--name must be 1–64 letters, digits, ".", "_" or "-" (not starting with "." or "-"), got "${name.slice(0, 80)}"`)
  const base = env.MESHLLM_HOME != null && env.MESHLLM_HOME !== '' ? env.MESHLLM_HOME : joinPath(env.XDG_DATA_HOME != null && env.XDG_DATA_HOME !== '' ? env.XDG_DATA_HOME : joinPath(homedir(), '.local', 'share'), 'meshllm')
  return joinPath(base, 'keys', `${name}.key`)
}

/**
 * `meshllm keys generate [--out <file> | --name <name>]`: a new keyholder key. Without --out
 * it goes to defaultKeyFile(name) and never replaces a key there; prints the public key on
 * stdout and, without --out, where the file is on stderr.
 */
export async function keysGenerate (values: Values): Promise<void> {
  if (values.out != null && values.name != null) throw new UsageError('--out and --name exclude each other')
  let out: string = values.out
  if (out == null) {
    out = defaultKeyFile(values.name ?? KEYHOLDER_DEFAULTS.keyName)
    await mkdir(dirname(out), { recursive: true, mode: 0o700 })
    if (await exists(out)) throw new UsageError(`${out} exists: refusing to replace a keyholder key (--name <name> or --out <file> for another one)`)
  }
  const k = await generateKeyholderKey(out)
  process.stdout.write(formatPublicKey(k.publicKey) + '\n')
  if (values.out == null) process.stderr.write(`keyholder key written to ${out} (keep it offline; its public key is above)\n`)
}

async function exists (path: string): Promise<boolean> {
  try {
    await lstat(path)
    return true
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return false
    throw err
  }
}

/** `meshllm governance init` */
export async function governanceInit (values: Values): Promise<void> {
  const keys: string[] = values.keyholder ?? []
  if (keys.length === 0 || values.out == null) throw new UsageError('governance init needs --keyholder <public key>… and --out <file>')
  const config = validateConfig({
    meshId: values['mesh-id'] ?? `meshllm-${Date.now().toString(36)}`,
    keyholders: keys.map(k => ({ publicKey: canonicalPublicKey(k) })),
    thresholds: defaultThresholds(keys.length),
    reviewPeriodMs: (intOption(values['review-hours'], 'review-hours', 0, KEYHOLDER_DEFAULTS.maxReviewHours) ?? KEYHOLDER_DEFAULTS.reviewHours) * 3_600_000,
    revertOnHalt: 3
  })
  await writeFile(values.out, JSON.stringify(configToJson(config), null, 2) + '\n', { flag: 'wx' })
  process.stdout.write(`governance file ${values.out}: mesh "${config.meshId}", ${keys.length} keyholder(s), digest ${configDigest(config)}\n`)
}

/** `meshllm governance show`: the file's config and digest; with --bootstrap, the mesh's state too */
export async function governanceShow (values: Values): Promise<void> {
  const config = await governanceConfigFrom(values.governance, values.json === true)
  const out: any = { config: configToJson(config), digest: configDigest(config) }
  if ((values.bootstrap ?? []).length > 0) {
    const { gov, close } = await governanceClient(config, values.bootstrap)
    out.state = gov.state.snapshot()
    await close()
  }
  process.stdout.write(JSON.stringify(out, null, values.json === true ? 0 : 2) + '\n')
}

const MOTION_ID = /^[0-9a-f]{64}$/

/** the message a keyholder command or `sign` creates, checked before any key is read or peer reached */
function checkMessageArgs (what: string, kind: 'halt' | 'resume' | 'vote' | 'phase', values: Values, arg: string | undefined): void {
  if (kind === 'vote') {
    if (arg == null || !MOTION_ID.test(arg)) throw new UsageError(`${what} needs a motion id (64 hex digits)`)
    if ((values.approve === true) === (values.reject === true)) throw new UsageError(`${what} needs exactly one of --approve / --reject`)
  } else if (kind === 'phase') {
    if (arg == null || !/^[0-4]$/.test(arg)) throw new UsageError(`${what} needs a phase number 0–4`)
  }
  if (values.approve != null && kind !== 'vote') throw new UsageError('--approve goes with vote')
  if (values.reject != null && kind !== 'vote') throw new UsageError('--reject goes with vote')
  if (values.lifts != null && kind !== 'resume') throw new UsageError('--lifts goes with resume')
  if (values.reason != null && kind !== 'halt' && kind !== 'resume') throw new UsageError('--reason goes with halt and resume')
  intOption(values.lifts, 'lifts', 1)
}

/**
 * meshllm halt | resume | vote <motion id> | phase <0-4>: build, sign with the given keys,
 * publish. `values.motion` (vote) and `values.phase` (phase) are the positional arguments.
 */
export async function keyholderCommand (cmd: 'halt' | 'resume' | 'vote' | 'phase', values: Values): Promise<void> {
  const arg: string | undefined = cmd === 'vote' ? values.motion : cmd === 'phase' ? values.phase : undefined
  checkMessageArgs(cmd, cmd, values, arg)
  const timings = new Timings()
  const keys = await keysFrom(values.key)
  const bootstrap = needBootstrap(values)
  const config = await governanceConfigFrom(values.governance)
  // learn the current version and halt from the mesh first, then sign and submit over the
  // same connections
  const { gov, close } = await governanceClient(config, bootstrap, timings, { minimal: true, requireCatchUp: true })
  try {
    const st = gov.state
    const base = baseMessage(st.config, st.version + 1)
    let bytes: Uint8Array
    if (cmd === 'halt') {
      bytes = await createEnvelope({ ...base, kind: Kind.HALT, reason: values.reason ?? DEFAULT_HALT_REASON }, keys)
    } else if (cmd === 'resume') {
      const lifts = intOption(values.lifts, 'lifts', 1) ?? st.halted?.version
      if (lifts == null) throw new GovernanceRefusedError('not-halted', 'the mesh is not halted: nothing to resume')
      bytes = await createEnvelope({ ...base, kind: Kind.RESUME, liftsVersion: lifts, reason: values.reason ?? DEFAULT_RESUME_REASON }, keys)
    } else if (cmd === 'vote') {
      bytes = await createEnvelope({ ...baseMessage(st.config, Date.now()), kind: Kind.VOTE, motionId: Buffer.from(arg as string, 'hex'), approve: values.approve === true }, keys)
    } else {
      bytes = await createEnvelope({ ...base, kind: Kind.PHASE, phase: Number(arg) }, keys)
    }
    timings.mark('sign')
    await submitAndReport(gov, bytes, values.json === true, timings)
  } finally {
    await close()
  }
}

/**
 * Offline signature collection:
 *   meshllm sign halt|resume|vote|phase [arg] --key k1 --out msg.gov   (create, signed by k1)
 *   meshllm sign --in msg.gov --key k2 --out msg.gov                   (add a signature)
 * `values.kind` and `values.arg` are the positional arguments.
 */
export async function signCommand (values: Values): Promise<void> {
  if (values.out == null) throw new UsageError('sign needs --out <file>')
  const kind: string | undefined = values.kind
  if (values.in != null) {
    if (kind != null) throw new UsageError('sign --in adds signatures to a message: no kind')
    for (const o of ['approve', 'reject', 'lifts', 'reason', 'version', 'ttl-hours']) if (values[o] != null) throw new UsageError(`--${o} does not go with --in (the message is signed as it is)`)
  } else {
    if (kind !== 'halt' && kind !== 'resume' && kind !== 'vote' && kind !== 'phase') throw new UsageError('sign needs a kind: halt | resume | vote | phase, or --in <file>')
    if (kind === 'resume' && values.lifts == null) throw new UsageError('sign resume needs --lifts <halt version>')
    checkMessageArgs(`sign ${kind}`, kind, values, values.arg)
  }
  const ttlHours = intOption(values['ttl-hours'], 'ttl-hours', 1, MAX_LIFETIME_MS / 3_600_000) ?? KEYHOLDER_DEFAULTS.ttlHours
  const version = intOption(values.version, 'version', 1)
  const keys = await keysFrom(values.key)
  let bytes: Uint8Array
  if (values.in != null) {
    bytes = await addSignatures(Uint8Array.from(await readFile(values.in)), keys)
  } else {
    const config = await governanceConfigFrom(values.governance, true)
    const base = baseMessage(config, version ?? Date.now(), ttlHours * 3_600_000)
    const arg: string | undefined = values.arg
    let m: Message
    if (kind === 'halt') m = { ...base, kind: Kind.HALT, reason: values.reason ?? DEFAULT_HALT_REASON }
    else if (kind === 'resume') m = { ...base, kind: Kind.RESUME, liftsVersion: intOption(values.lifts, 'lifts', 1) as number, reason: values.reason ?? DEFAULT_RESUME_REASON }
    else if (kind === 'vote') m = { ...base, kind: Kind.VOTE, motionId: Buffer.from(arg as string, 'hex'), approve: values.approve === true }
    else m = { ...base, kind: Kind.PHASE, phase: Number(arg) }
    bytes = await createEnvelope(m, keys)
  }
  await writeFile(values.out, bytes)
  const env = decodeEnvelope(bytes)
  process.stdout.write(`${values.out}: ${Kind[env.message.kind]} version ${env.message.version}, ${env.signatures.length} signature(s)\n`)
}

/** `meshllm submit <file>` (`values.file`) */
export async function submitCommand (values: Values): Promise<void> {
  if (values.file == null) throw new UsageError('submit needs a signed message file')
  const bootstrap = needBootstrap(values)
  const config = await governanceConfigFrom(values.governance)
  await publishEnvelope(Uint8Array.from(await readFile(values.file)), config, bootstrap, values.json === true)
}
