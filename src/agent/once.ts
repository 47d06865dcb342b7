/** `meshllm agent --once`: one cycle of the agent, its tasks or why it stopped. */
import type { MeshNode } from '../node/node.js'
import type { Router } from '../router/router.js'
import type { GovernanceService } from '../governance/service.js'
import { HaltedError } from '../util/errors.js'
import { Agent, type AgentConfig } from './agent.js'
import type { AgentStore } from './store.js'
import type { InjectedMetrics } from './observe.js'
import type { TaskView } from './task-text.js'

export interface AgentOnceOptions {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  store: AgentStore
  injected?: InjectedMetrics
  config?: AgentConfig
  signal?: AbortSignal
  log?: (line: string) => void
}

/** `meshllm agent --once [--json]`: the output shape */
export interface AgentOnceResult { tasks: TaskView[] }

/**
 * One cycle (for `meshllm agent --once`). Throws HaltedError when a HALT stopped the cycle
 * (its tasks so far are stored), and an Error when the cycle failed.
 */
export async function runAgentOnce (o: AgentOnceOptions): Promise<AgentOnceResult> {
  const agent = new Agent({ node: o.node, router: o.router, governance: o.governance, store: o.store, config: o.config, log: o.log })
  try {
    const r = await agent.runCycle({ injected: o.injected, signal: o.signal })
    if (r.state === 'halted') throw new HaltedError(r.haltReason?.startsWith('halted by governance') === true ? r.haltReason : `halted by governance: ${r.haltReason ?? ''}`)
    if (r.state === 'failed') throw new Error(`agent cycle failed: ${r.error ?? 'unknown error'}`)
    return { tasks: r.tasks }
  } finally {
    await agent.close()
  }
}
