/** `meshllm status`: the experts this mesh knows, with model, speed and measured health. */
import { createMeshNode, connectBootstrap } from '../node/node.js'
import { discoverExperts } from '../router/discovery.js'
import { reachOf } from '../node/reach.js'
import { RouterTokenizer } from '../router/tokenizer.js'
import { fingerprintHex } from '../expert/tokenizer.js'
import { UsageError } from './errors.js'
import type { Values } from './args.js'
import { errorMessage } from '../util/errors.js'

/** options: src/cli/commands/status.ts */
export async function statusCommand (values: Values): Promise<void> {
  const bootstrap: string[] = values.bootstrap ?? []
  if (bootstrap.length === 0) {
    throw new UsageError('status needs --bootstrap <multiaddr>')
  }
  const node = await createMeshNode({ listen: [], dhtServer: false })
  await node.start()
  const tokenizer = await RouterTokenizer.load(values.tokenizer ?? 'meshtest-c')
  try {
    await connectBootstrap(node, bootstrap)
    const found = await discoverExperts(node, tokenizer.fingerprint, { signal: AbortSignal.timeout(5_000) })
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
      process.stdout.write(JSON.stringify({ experts: rows, tokenizer: fingerprintHex(tokenizer.fingerprint).slice(0, 16) }) + '\n')
      return
    }
    process.stdout.write(`${rows.length} expert(s) seen (router tokenizer ${fingerprintHex(tokenizer.fingerprint).slice(0, 16)})\n`)
    for (const x of rows) {
      process.stdout.write(`${x.peerId}  ${x.model.padEnd(14)} ${(x.parameters / 1e6).toFixed(1)}M ${x.quantization} ctx ${x.contextLength}  ${x.tokensPerSecond} tok/s  slots ${x.freeSlots}/${x.maxSlots}  ${x.health}${x.rttMs != null ? ` (${x.rttMs} ms, ${x.reach ?? '?'})` : ''}${x.compatible ? '' : '  INCOMPATIBLE TOKENIZER'}\n`)
    }
  } finally {
    await tokenizer.close()
    await node.stop()
  }
}
