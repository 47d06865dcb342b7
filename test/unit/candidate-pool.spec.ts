/** candidatePool: the bounded sample of known experts one generation chooses among. */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { candidatePool } from '../../src/router/candidates.js'
import { HealthTable } from '../../src/router/health.js'
import { busyBackoff } from '../../src/router/generation.js'
import type { ExpertRecord } from '../../src/wire/record.js'

describe('candidatePool', function () {
  let records: ExpertRecord[]
  before(async function () {
    const ids = await Promise.all(Array.from({ length: 40 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))))
    records = ids.map(peerId => ({ peerId }) as unknown as ExpertRecord)
  })
  const id = (r: ExpertRecord): string => r.peerId.toString()

  it('keeps every record when there are no more than n', function () {
    const health = new HealthTable()
    assert.equal(candidatePool(records.slice(0, 5), 5, health, () => true).length, 5)
  })

  it('puts the own expert first, then measured usable experts fastest first, unusable ones last', function () {
    fc.assert(fc.property(fc.integer({ min: 1, max: 39 }), fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 10 }), (n, measured, unusable) => {
      const health = new HealthTable()
      const local = id(records[39])
      for (let i = 0; i < measured; i++) health.success(id(records[i]), 100 - i)
      const banned = new Set(records.slice(measured, measured + unusable).map(id))
      const pool = candidatePool(records, n, health, x => !banned.has(x), local)
      assert.equal(pool.length, n)
      assert.equal(new Set(pool.map(id)).size, n)
      assert.equal(id(pool[0]), local)
      // the measured ones follow, fastest (lowest latency) first
      const m = pool.slice(1, 1 + Math.min(measured, n - 1)).map(id)
      assert.deepEqual(m, records.slice(0, measured).reverse().slice(0, m.length).map(id))
      // an unusable expert is in the pool only when the usable ones do not fill it
      assert.equal(pool.filter(r => banned.has(id(r))).length, Math.max(0, n - (40 - unusable)))
    }), { numRuns: 200 })
  })
})

describe('BUSY backoff and latency samples', function () {
  it('busyBackoff: 250 ms doubling to a 4 s cap, within ±50 % jitter, at every count', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 1_000 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (n, r) => {
      const base = Math.min(4_000, 250 * 2 ** (n - 1))
      const ms = busyBackoff(n, () => r)
      return ms >= base * 0.5 && ms < base * 1.5 && Number.isFinite(ms)
    }))
    assert.equal(busyBackoff(1, () => 0.5), 250)
    assert.equal(busyBackoff(5, () => 0.5), 4_000)
    assert.equal(busyBackoff(6, () => 0.5), 4_000)
  })

  it('an open (success without a latency sample) leaves the latency estimate alone; a step moves it', () => {
    const health = new HealthTable()
    health.success('x', 40)
    health.success('x') // an open that waited 9 s for a slot
    assert.equal(health.get('x').latencyMs, 40)
    assert.equal(health.get('x').samples, 1)
    assert.equal(health.get('x').successes, 2)
    health.success('x', 140)
    assert.ok(health.get('x').latencyMs > 40)
  })
})
