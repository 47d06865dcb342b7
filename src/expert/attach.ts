/**
 * Attaches an expert to an EXISTING libp2p node (gRPC RegisterExpert): loads a ModelHost,
 * registers the /meshllm/infer handler on the node (the same InferService as `startExpert`,
 * with the node itself as its registrar), publishes the signed record on the DHT with
 * ExpertAdvertiser (refreshed) and returns it. `detach()` undoes all of it.
 *
 * One expert per node: a node's peer id is its expert identity (one record key), so a node
 * that already serves /meshllm/infer (e.g. `meshllm join --model …`) refuses a second one.
 * A router never routes to its own node's expert (discovery skips self; libp2p cannot dial
 * itself): an attached expert serves the other routers of the mesh.
 */
import { defaultLogger } from '@libp2p/logger'
import type { MeshNode } from '../node/node.js'
import type { ExpertRecord } from '../wire/record.js'
import { INFER_PROTOCOL } from '../wire/types.js'
import { ModelHost, type ModelHostOptions } from './model-host.js'
import { InferService } from './infer-service.js'
import { ExpertAdvertiser } from './advertise.js'
import { resolveModel } from './resolve.js'

export interface AttachExpertOptions extends Omit<ModelHostOptions, 'modelPath'> {
  /** bundled name (meshtest-a), local path or URI */
  model: string
  progress?: boolean
  idleTimeoutMs?: number
  recordTtlMs?: number
  recordRefreshMs?: number
  haltReason?: () => string | undefined
  /** the signed HALT envelope in force, sent with HALTED answers (InferServiceInit.haltEnvelope) */
  haltEnvelope?: () => Uint8Array | undefined
}

export interface AttachedExpert {
  node: MeshNode
  host: ModelHost
  service: InferService
  advertiser: ExpertAdvertiser
  tokensPerSecond: number
  /** the record as first published */
  record: ExpertRecord
  detach: () => Promise<void>
}

/** the node already serves an expert (or one is being attached) */
export class ExpertAlreadyAttachedError extends Error {
  static override name = 'ExpertAlreadyAttachedError'
  override name = 'ExpertAlreadyAttachedError'
}

const attached = new WeakMap<object, 'loading' | AttachedExpert>()

/** the expert attached to this node by attachExpert, if any */
export function attachedExpert (node: MeshNode): AttachedExpert | undefined {
  const a = attached.get(node)
  return a === 'loading' ? undefined : a
}

export async function attachExpert (node: MeshNode, opts: AttachExpertOptions): Promise<AttachedExpert> {
  if (attached.has(node)) throw new ExpertAlreadyAttachedError(`this node already ${attached.get(node) === 'loading' ? 'is loading' : 'serves'} an expert: one expert per node (peer id)`)
  if (node.getProtocols().includes(INFER_PROTOCOL)) throw new ExpertAlreadyAttachedError(`this node already serves ${INFER_PROTOCOL} (one expert per node)`)
  attached.set(node, 'loading')
  const log = defaultLogger().forComponent('meshllm:expert:attach')
  let host: ModelHost | undefined
  let service: InferService | undefined
  try {
    const modelPath = await resolveModel(opts.model, { progress: opts.progress })
    host = await ModelHost.load({ ...opts, modelPath })
    const tokensPerSecond = await host.measureSpeed()
    log('model %s loaded: %d tokens/s, %d threads', host.summary.name, tokensPerSecond.toFixed(1), host.threads)
    // the node is the registrar: libp2p's node.handle/unhandle are the registrar's, with the same options
    service = new InferService({ registrar: node, logger: node.logger }, { host, idleTimeoutMs: opts.idleTimeoutMs, haltReason: opts.haltReason, haltEnvelope: opts.haltEnvelope })
    await service.start()
    const advertiser = new ExpertAdvertiser(node, host, { tokensPerSecond, ttlMs: opts.recordTtlMs, refreshMs: opts.recordRefreshMs }, log)
    await advertiser.publish()
    advertiser.start()
    const h = host
    const s = service
    let detached = false
    const result: AttachedExpert = {
      node,
      host: h,
      service: s,
      advertiser,
      tokensPerSecond,
      record: advertiser.lastRecord as ExpertRecord,
      detach: async () => {
        if (detached) return
        detached = true
        advertiser.stop()
        await s.stop().catch(() => {})
        await h.close().catch(() => {})
        attached.delete(node)
      }
    }
    attached.set(node, result)
    return result
  } catch (err) {
    if (service?.isStarted() === true) await service.stop().catch(() => {})
    await host?.close().catch(() => {})
    attached.delete(node)
    throw err
  }
}
