/**
 * A governance-only mesh node in its own process, for bench/governance.ts: prints its
 * multiaddr, then answers each "cpu" line on stdin with its own CPU time and refusal counts.
 * Usage: node dist/bench/gov-node.js <governance file>
 */
import { createInterface } from 'node:readline'
import { createMeshNode } from '../src/node/node.js'
import { loadConfig } from '../src/governance/config.js'
import { GovernanceState } from '../src/governance/state.js'
import { GovernanceService } from '../src/governance/service.js'
import { verificationStats } from '../src/governance/envelope.js'

const config = await loadConfig(process.argv[2])
const node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
await node.start()
const gov = new GovernanceService(node, new GovernanceState(config))
await gov.start()
process.stdout.write(node.getMultiaddrs()[0].toString() + '\n')
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() !== 'cpu') return
  const c = process.cpuUsage()
  process.stdout.write(JSON.stringify({ user: c.user, system: c.system, rejected: { ...gov.state.rejected, verifications: verificationStats.count } }) + '\n')
})
process.once('SIGTERM', () => { void Promise.resolve(node.stop()).finally(() => process.exit(0)) })
