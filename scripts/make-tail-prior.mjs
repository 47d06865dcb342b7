// Writes models/tail-prior.bin.gz: the tail prior of the 'unigram' and 'bounded' tails
// (src/aggregate/prior.ts, docs/quality.md). Run after `npm run build`:
//   node scripts/make-tail-prior.mjs [--models meshtest-a,meshtest-b,meshtest-c] [--sequences 8] [--length 256] [--seed 1]
//
// What it measures: the models' OWN unlisted mass. Each model writes `sequences` texts of
// `length` tokens from BOS by sampling its own top-256 frames (temperature 1); at every
// position the native helper adds the full-distribution probability of every token the
// frame does NOT list into a per-model accumulator (E[p(t) · 1(t not in the top 256)]). The
// prior is the mean over models of their accumulators, each normalised to sum 1. No held-out
// text is read: the evaluation text stays unseen.
import { writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { ModelHost } from '../dist/src/expert/model-host.js'
import { resolveModel } from '../dist/src/expert/resolve.js'
import { tailPriorFromWeights, encodeTailPrior, decodeTailPrior } from '../dist/src/aggregate/prior.js'
import { createRng } from '../dist/src/aggregate/sampling.js'

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'meshtest-a,meshtest-b,meshtest-c' },
    sequences: { type: 'string', default: '8' },
    length: { type: 'string', default: '256' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: new URL('../models/tail-prior.bin.gz', import.meta.url).pathname }
  }
})
const models = values.models.split(',')
const sequences = Number(values.sequences)
const length = Number(values.length)
const rng = createRng(Number(values.seed))

let total
for (const name of models) {
  const started = Date.now()
  const host = await ModelHost.load({ modelPath: await resolveModel(name), threads: 1, maxSessions: 1, gpu: false })
  const V = host.summary.vocabSize
  const acc = new Float64Array(V)
  total ??= new Float64Array(V)
  let positions = 0
  let tailSum = 0
  try {
    for (let s = 0; s < sequences; s++) {
      const session = host.openSession()
      if (!session.nativeFrames) throw new Error('the native helper is needed (node scripts/build-native.mjs)')
      try {
        let next = [host.summary.bosTokenId ?? 128000]
        for (let i = 0; i < length; i++) {
          const [frame] = await session.evaluate(next, [], 256, { unlistedInto: acc })
          positions++
          tailSum += frame.tailMass
          // sample the next token from the listed entries (temperature 1, renormalised)
          let z = 0
          for (const lp of frame.logprobs) z += Math.exp(lp)
          let u = rng() * z
          let pick = frame.ids[0]
          for (let j = 0; j < frame.ids.length; j++) {
            u -= Math.exp(frame.logprobs[j])
            if (u <= 0) { pick = frame.ids[j]; break }
          }
          next = [pick]
        }
      } finally {
        await session.close()
      }
    }
  } finally {
    await host.close()
  }
  let sum = 0
  for (let t = 0; t < V; t++) sum += acc[t]
  for (let t = 0; t < V; t++) total[t] += acc[t] / sum / models.length
  console.info(`${name}: ${positions} positions, mean tail mass ${(tailSum / positions).toFixed(4)}, ${((Date.now() - started) / 1000).toFixed(1)} s`)
}

const prior = tailPriorFromWeights(total, 'tail-prior.bin.gz')
const bytes = encodeTailPrior(prior)
// what the file decodes to, and how much of the prior's mass its 1,000 heaviest tokens hold
const back = decodeTailPrior(bytes)
const sorted = Array.from(back.weights).sort((a, b) => b - a)
const top = sorted.slice(0, 1000).reduce((a, x) => a + x, 0) / back.total
await writeFile(values.out, bytes)
console.info(`wrote ${values.out}: ${bytes.byteLength} bytes; the 1,000 heaviest tokens hold ${(100 * top).toFixed(1)} % of the prior`)
