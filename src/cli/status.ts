/** `meshllm status`: the experts this mesh knows, with model, speed and measured health. */
import { createMeshNode, connectBootstrap } from '../node/node.js'
import { discoverExperts } from '../router/discovery.js'
import { reachOf } from '../node/reach.js'
import { fingerprintHex, summarizeGguf } from '../expert/tokenizer.js'
import { resolveModel } from '../expert/resolve.js'
import { UsageError } from './errors.js'
import { intOption, type Values } from './args.js'
import { errorMessage } from '../util/errors.js'

/** how long status looks for experts and their records (ms): the provider lookup ≤ 2.5 s, records the rest */
const STATUS_DISCOVERY_MS = 8_000

/** experts per page of `meshllm status` (default of --page-size) */
export const STATUS_PAGE_SIZE = 50

/**
 * options: src/cli/commands/status.ts. One DHT lookup finds the DHT servers holding the experts'
 * provider records, each is asked for them (how many experts the mesh has: `seen`); records are fetched and experts pinged for one page only, in
 * peer id order, so the command costs the same at 30 experts and at 3,000.
 */
export async function statusCommand (values: Values): Promise<void> {
  const bootstrap: string[] = values.bootstrap ?? []
  if (bootstrap.length === 0) {
    throw new UsageError('status needs --bootstrap <multiaddr>')
  }
  const page = intOption(values.page, 'page', 1) ?? 1
  const pageSize = intOption(values['page-size'], 'page-size', 1, 500) ?? STATUS_PAGE_SIZE
  let seen = 0
  const t0 = performance.now()
  const node = await createMeshNode({ listen: [], dhtServer: false })
  await node.start()
  // only the tokenizer's fingerprint is needed: read from the GGUF file (no model load, which
  // took 3.5–4 s of a 6 s status), while the node joins
  const loading = resolveModel(values.tokenizer ?? 'meshtest-c').then(async path => await summarizeGguf(path))
  const tStart = performance.now()
  const joined = connectBootstrap(node, bootstrap)
  let tokenizer: { fingerprint: Uint8Array } | undefined
  try {
    await joined
    const tConnected = performance.now()
    tokenizer = await loading
    const found = await discoverExperts(node, tokenizer.fingerprint, {
      signal: AbortSignal.timeout(STATUS_DISCOVERY_MS),
      lookupTimeoutMs: 2_500,
      allHolders: true,
      concurrency: 16,
      only: (ids) => {
        seen = ids.length
        return ids.sort((a, b) => a.toString() < b.toString() ? -1 : 1).slice((page - 1) * pageSize, page * pageSize)
      }
    })
    const pages = Math.max(1, Math.ceil(seen / pageSize))
    const tFound = performance.now()
    const rows = await Promise.all([...found.compatible.map(r => ({ r, compatible: true })), ...found.incompatible.map(r => ({ r, compatible: false }))].map(async ({ r, compatible }) => {
      let rttMs: number | undefined
      let error: string | undefined
      try {
        rttMs = await (node.services.ping as any).ping(r.peerId, { signal: AbortSignal.timeout(3_000) })
      } catch (err) {
        error = errorMessage(err)
      }
      return {
        peerId: r.peerId.toString(),
        model: r.modelName,
        parameters: r.parameterCount,
        quantization: r.quantization,
        contextLength: r.contextLength,
        tokensPerSecond: Math.round(r.tokensPerSecond * 10) / 10,
        freeSlots: r.freeSlots,
        maxSlots: r.maxSlots,
        tokenizer: fingerprintHex(r.tokenizerFingerprint).slice(0, 16),
        compatible,
        recordAgeMs: Date.now() - r.issuedAtMs,
        health: error == null ? 'ok' : 'unreachable',
        // how this node reached it: direct, relayed (circuit relay) or upgraded (DCUtR)
        reach: reachOf(node, r.peerId),
        rttMs,
        error
      }
    }))
    if (values.json === true) {
      const ms = (x: number): number => Math.round(x)
      const phasesMs = { start: ms(tStart - t0), connect: ms(tConnected - tStart), discover: ms(tFound - tConnected), ping: ms(performance.now() - tFound) }
      process.stdout.write(JSON.stringify({ seen, page, pages, pageSize, phasesMs, experts: rows, missing: found.missing ?? [], tokenizer: fingerprintHex(tokenizer.fingerprint).slice(0, 16) }) + '\n')
      return
    }
    process.stdout.write(`${seen} expert(s) seen; page ${page} of ${pages}: ${rows.length} record(s)${(found.missing ?? []).length > 0 ? `, ${(found.missing ?? []).length} record(s) not found` : ''} (router tokenizer ${fingerprintHex(tokenizer.fingerprint).slice(0, 16)})\n`)
    for (const x of rows) {
      process.stdout.write(`${x.peerId}  ${x.model.padEnd(14)} ${(x.parameters / 1e6).toFixed(1)}M ${x.quantization} ctx ${x.contextLength}  ${x.tokensPerSecond} tok/s  slots ${x.freeSlots}/${x.maxSlots}  ${x.health}${x.rttMs != null ? ` (${x.rttMs} ms, ${x.reach ?? '?'})` : ''}${x.compatible ? '' : '  INCOMPATIBLE TOKENIZER'}\n`)
    }
  } finally {
    await joined.catch(() => {})
    await loading.catch(() => undefined)
    await node.stop()
  }
}
