/**
 * Network-namespace topologies for NAT-traversal tests on one machine: a "public internet"
 * (one bridge), NAT routers (nftables masquerade) with home LANs behind them, and hosts that
 * run real processes (`ip netns exec <ns> node …`). Needs root, `ip` and `nft`.
 *
 *   internet ns: br0 ── p1 ═ eth0 public host (relay)         <pub>.10, .11, …
 *                   └── p2 ═ wan0 NAT router ── br0 (LAN)     <pub>.100, .101, …
 *                                                 ├── h1 ═ eth0 home host  192.168.<k>.10
 *                                                 └── h2 ═ eth0 home host  192.168.<k>.11
 *
 * SAFETY: nothing here touches the machine's real network. Every veth pair is created inside
 * a test namespace with its peer placed directly into another (`ip -n A link add … peer name
 * … netns B`), so no interface ever exists in the root namespace; every address, route,
 * sysctl and nft rule is set inside a test namespace. No namespace is linked to the root one,
 * so no packet can leave the topology. Names are `mlt-<pid>-<n>-<role>`; destroy() (also run
 * on exit/SIGINT/SIGTERM) kills the processes inside and deletes the namespaces; sweepStale()
 * deletes those of dead pids.
 *
 * The public net is NOT a private range by default: libp2p drops observed addresses that
 * are private (10/8, 100.64/10, TEST-NETs, 198.18/15 … see @libp2p/utils isPrivate), so
 * identify/autonat only behave as on the internet with a public-looking prefix. Sealed
 * namespaces make it harmless; pass `publicNet: '10.77.3'` for a private one.
 *
 * NAT behaviour, measured with the spec's probes (kernel 6.18, nftables 1.0.6, UDP and TCP):
 * - 'port-restricted' (plain `masquerade`): the external port is the inside port when free;
 *   a new flow from an inside ip:port that still has a tracked flow reuses its mapping
 *   (conntrack's by-source lookup), so one inside port has one external port for every destination
 *   (endpoint-independent), even a remapped one (two hosts behind one NAT on one port: the
 *   second gets one random port, for all its destinations). Filtering is address-and-port
 *   dependent: a packet that is no reply of a flow reaches the router itself, dropped below.
 * - 'symmetric' (`masquerade random`; `fully-random` measured the same): a random port for
 *   every new flow, so each destination, even the same one on a new TCP connection, sees a
 *   different port (endpoint-dependent). `persistent` alone changes nothing here (it is
 *   about the address choice; there is one uplink address).
 * Latency uses `tc … netem`; kernels without sch_netem (this one: "Specified qdisc kind is
 * unknown") skip it and say so in `warnings`.
 */
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process'

export interface RunResult { code: number, stdout: string, stderr: string }

/** Runs argv, resolves with exit code and output (never rejects for a non-zero exit). */
export async function run (argv: string[], opts: { input?: string, timeoutMs?: number } = {}): Promise<RunResult> {
  return await new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: [opts.input == null ? 'ignore' : 'pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 })
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code: code ?? (signal != null ? 128 : 1), stdout, stderr }))
    child.stdin?.on('error', () => {}) // a command that exits without reading: EPIPE
    child.stdin?.end(opts.input)
  })
}

/** Runs argv and throws (naming the command and its stderr) unless it exits 0. */
async function must (argv: string[], input?: string): Promise<string> {
  const r = await run(argv, { input })
  if (r.code !== 0) throw new Error(`netns: \`${argv.join(' ')}\` exited ${r.code}: ${r.stderr.trim()}`)
  return r.stdout
}

function hasCommand (cmd: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }); return true } catch { return false }
}

/** Whether topologies can be built here; `reason` says why not (for `this.skip()`). */
export async function natAvailable (): Promise<{ ok: boolean, reason?: string }> {
  if (process.platform !== 'linux') return { ok: false, reason: 'network namespaces need Linux' }
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root' }
  for (const cmd of ['ip', 'nft']) if (!hasCommand(cmd)) return { ok: false, reason: `\`${cmd}\` is not installed` }
  const probe = `mlt-${process.pid}-probe`
  const r = await run(['ip', 'netns', 'add', probe])
  if (r.code !== 0) return { ok: false, reason: `cannot create a network namespace: ${r.stderr.trim()}` }
  const nft = await run(['ip', 'netns', 'exec', probe, 'nft', '-f', '-'], { input: 'table ip t {\n chain c { type nat hook postrouting priority srcnat; masquerade; }\n}\n' })
  await run(['ip', 'netns', 'del', probe])
  return nft.code === 0 ? { ok: true } : { ok: false, reason: `nft masquerade unavailable: ${nft.stderr.trim()}` }
}

/** One namespace with an address: a public host, a home host (or a NAT router's uplink). */
export class NetnsHost {
  constructor (
    readonly topo: Topology,
    /** the role name given at creation */
    readonly name: string,
    /** the namespace's full name */
    readonly ns: string,
    /** its IPv4 address (a home host's is private; see `nat.publicIp` for how it is seen) */
    readonly ip: string,
    /** the NAT router in front of it (home hosts only) */
    readonly nat?: NatRouter
  ) {}

  /** argv prefix that runs a command inside this namespace */
  get exec (): string[] { return ['ip', 'netns', 'exec', this.ns] }

  /** Spawns `cmd args` inside the namespace; destroy() kills it if still running. */
  spawn (cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], opts)
    this.topo.children.add(child)
    child.on('exit', () => this.topo.children.delete(child))
    return child
  }

  /** Runs `cmd args` inside the namespace to completion. */
  async run (cmd: string, args: string[], opts: { input?: string, timeoutMs?: number } = {}): Promise<RunResult> {
    return await run([...this.exec, cmd, ...args], opts)
  }
}

export type NatKind = 'port-restricted' | 'symmetric'

export interface NatRouter extends NetnsHost {
  kind: NatKind
  /** its address on the public net: what the internet sees of its hosts */
  publicIp: string
  /** first three octets of its LAN /24 */
  lanNet: string
  /** its hosts, in creation order */
  hosts: NetnsHost[]
}

export interface LinkOptions {
  /** one-way delay added on this namespace's uplink egress (netem; skipped where missing) */
  delayMs?: number
}

export interface NatOptions extends LinkOptions {
  kind?: NatKind
  /** LAN /24 as three octets; default 192.168.<k> for the k-th NAT (equal LANs are allowed) */
  lanNet?: string
  /** raw `masquerade` arguments, overriding `kind` (experiments: 'random', 'persistent' …) */
  masquerade?: string
}

const live = new Set<Topology>()
let counter = 0
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/** exit/signal hooks, installed while a topology is alive: synchronous cleanup */
function onExit (): void { for (const t of live) t.destroySync() }
function onSignal (sig: NodeJS.Signals): void {
  const alone = process.listenerCount(sig) === 1
  onExit() // empties `live`, which removes these hooks
  process.removeListener(sig, onSignal)
  if (alone) process.kill(process.pid, sig) // ours was the only one: die by the signal as without it
}
function hooks (on: boolean): void {
  if (on && live.size === 1) {
    process.on('exit', onExit)
    for (const s of SIGNALS) process.on(s, onSignal)
  } else if (!on && live.size === 0) {
    process.removeListener('exit', onExit)
    for (const s of SIGNALS) process.removeListener(s, onSignal)
  }
}

export class Topology {
  /** namespace name prefix, `mlt-<pid>-<n>-` */
  readonly prefix: string
  /** first three octets of the public /24 */
  readonly publicNet: string
  /** options that could not be honoured here (e.g. delay without netem) */
  readonly warnings: string[] = []
  readonly children = new Set<ChildProcess>()
  private readonly namespaces: string[] = []
  private readonly internet: string
  private ports = 0
  private publicHosts = 0
  private nats: NatRouter[] = []
  private netem?: boolean

  private constructor (publicNet?: string) {
    const n = counter++
    this.prefix = `mlt-${process.pid}-${n}-`
    this.publicNet = publicNet ?? `11.77.${(process.pid + n) % 250 + 1}`
    this.internet = this.prefix + 'internet'
  }

  /** A topology with its public net (an empty bridge). Destroy it (after() hook). */
  static async create (opts: { publicNet?: string } = {}): Promise<Topology> {
    const t = new Topology(opts.publicNet)
    live.add(t)
    hooks(true)
    try {
      await t.addNamespace('internet', false, ['link add br0 type bridge', 'link set br0 up'])
    } catch (err) {
      await t.destroy()
      throw err
    }
    return t
  }

  /**
   * Namespace `prefix+role` with lo up, deterministic sysctls (a new namespace inherits the
   * root's IPv4 conf) and `lines` run by one `ip -batch` inside it. Names and addresses are
   * allocated before the first await, so hosts may be added concurrently.
   */
  private async addNamespace (role: string, forward: boolean, lines: string[]): Promise<string> {
    if (!/^[a-z0-9]{1,16}$/.test(role)) throw new Error(`netns: role name ${role} must be [a-z0-9]{1,16}`)
    const ns = this.prefix + role
    if (this.namespaces.includes(ns)) throw new Error(`netns: ${role} exists`)
    this.namespaces.push(ns)
    await must(['ip', 'netns', 'add', ns])
    // no reverse-path drops, forwarding only on routers, and bridges that switch frames
    // without passing them through this namespace's IP hooks (br_netfilter defaults to 1)
    // (written to /proc/sys/net from inside the namespace, which it then shows: no procps needed)
    const sysctls = { 'ipv4/conf/all/rp_filter': 0, 'ipv4/conf/default/rp_filter': 0, 'ipv4/ip_forward': forward ? 1 : 0, 'bridge/bridge-nf-call-iptables': 0 }
    await must(['ip', 'netns', 'exec', ns, 'sh', '-c', Object.entries(sysctls)
      .map(([key, v]) => `f=/proc/sys/net/${key}; [ ! -e $f ] || echo ${v} > $f`).join('; ')])
    await must(['ip', '-n', ns, '-batch', '-'], ['link set lo up', ...lines].join('\n'))
    return ns
  }

  /** `ip -batch` lines for a veth `inner` (addressed, up) whose peer `port` lands in `bridgeNs` */
  private veth (inner: string, cidr: string, bridgeNs: string, port: string): string[] {
    return [`link add ${inner} type veth peer name ${port} netns ${bridgeNs}`, `addr add ${cidr} dev ${inner}`, `link set ${inner} up`]
  }

  /** Enslaves `port` to br0 of `bridgeNs`; adds the link's delay on `dev` of `ns` */
  private async attach (bridgeNs: string, port: string, ns: string, dev: string, opts: LinkOptions): Promise<void> {
    await must(['ip', '-n', bridgeNs, 'link', 'set', port, 'master', 'br0', 'up'])
    const ms = opts.delayMs ?? 0
    if (ms <= 0) return
    const r = this.netem === false ? undefined : await run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${ms}ms`])
    this.netem = r?.code === 0
    if (!this.netem) this.warnings.push(`delay ${ms} ms on ${ns} ${dev} skipped: no tc netem (${r?.stderr.trim() ?? 'see above'})`)
  }

  /** A host on the public net (relay, bootstrap): <pub>.10, .11, … */
  async addPublicHost (name: string, opts: LinkOptions = {}): Promise<NetnsHost> {
    const host = new NetnsHost(this, name, this.prefix + name, `${this.publicNet}.${10 + this.publicHosts++}`)
    const port = `p${++this.ports}`
    await this.addNamespace(name, false, this.veth('eth0', `${host.ip}/24`, this.internet, port))
    await this.attach(this.internet, port, host.ns, 'eth0', opts)
    return host
  }

  /** A NAT router: uplink wan0 on the public net (<pub>.100, .101, …), LAN bridge br0. */
  async addNat (name: string, opts: NatOptions = {}): Promise<NatRouter> {
    const kind = opts.kind ?? 'port-restricted'
    const lanNet = opts.lanNet ?? `192.168.${this.nats.length + 1}`
    const host = new NetnsHost(this, name, this.prefix + name, `${lanNet}.1`)
    const nat: NatRouter = Object.assign(host, { kind, publicIp: `${this.publicNet}.${100 + this.nats.length}`, lanNet, hosts: [] })
    this.nats.push(nat)
    const port = `p${++this.ports}`
    await this.addNamespace(name, true, [...this.veth('wan0', `${nat.publicIp}/24`, this.internet, port),
      'link add br0 type bridge', `addr add ${lanNet}.1/24 dev br0`, 'link set br0 up'])
    await this.attach(this.internet, port, nat.ns, 'wan0', opts)
    const masq = opts.masquerade ?? (kind === 'symmetric' ? 'random' : '')
    // masquerade out of the uplink; forward LAN→anywhere and replies only; anything
    // unsolicited on the uplink is dropped silently (a RST or ICMP would spoil hole punching)
    await must([...nat.exec, 'nft', '-f', '-'], `table ip mlt {
      chain postrouting { type nat hook postrouting priority srcnat; policy accept; oifname "wan0" masquerade ${masq}; }
      chain forward { type filter hook forward priority filter; policy drop;
        ct state established,related accept; iifname "br0" accept; }
      chain input { type filter hook input priority filter; policy accept;
        iifname "wan0" ct state != { established, related } drop; }
    }`)
    return nat
  }

  /** A host on `nat`'s LAN (<lan>.10, .11, …), default route via the router. */
  async addHomeHost (nat: NatRouter, name: string, opts: LinkOptions = {}): Promise<NetnsHost> {
    const host = new NetnsHost(this, name, this.prefix + name, `${nat.lanNet}.${10 + nat.hosts.length}`, nat)
    nat.hosts.push(host)
    const port = `h${nat.hosts.length}`
    await this.addNamespace(name, false, [...this.veth('eth0', `${host.ip}/24`, nat.ns, port), `route add default via ${nat.lanNet}.1`])
    await this.attach(nat.ns, port, host.ns, 'eth0', opts)
    return host
  }

  /** Kills everything still running in the namespaces and deletes them; idempotent. */
  destroySync (): void {
    for (const child of this.children) child.kill('SIGKILL')
    for (const ns of this.namespaces.splice(0).reverse()) removeNamespace(ns)
    live.delete(this)
    hooks(false)
  }

  /** destroySync(), then waits (up to 2 s) for the spawned processes to be reaped. */
  async destroy (): Promise<void> {
    const children = [...this.children].filter(c => c.exitCode == null && c.signalCode == null)
    const exited = children.map(async c => await new Promise(resolve => c.once('exit', resolve)))
    this.destroySync()
    await Promise.race([Promise.all(exited), new Promise(resolve => setTimeout(resolve, 2000).unref())])
  }
}

/** Kills the processes inside `ns` and deletes it (synchronous: usable in an exit hook). */
function removeNamespace (ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean)
    for (const pid of pids) try { process.kill(Number(pid), 'SIGKILL') } catch {}
  } catch {}
  try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }) } catch {}
}

/** Names of this machine's `mlt-` namespaces. */
export function listTestNamespaces (): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  return out.split('\n').map(l => l.split(' ')[0]).filter(n => n.startsWith('mlt-'))
}

/** Deletes leftover `mlt-<pid>-…` namespaces whose creating process is gone; returns them. */
export function sweepStale (): string[] {
  const stale = listTestNamespaces().filter(ns => {
    const pid = Number(ns.split('-')[1])
    if (!Number.isInteger(pid) || pid === process.pid) return false
    try { process.kill(pid, 0); return false } catch (err: any) { return err.code === 'ESRCH' }
  })
  stale.forEach(removeNamespace)
  return stale
}
