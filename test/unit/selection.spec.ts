import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { addressGroup, colocationFactors, observedGroups, selectExperts, COLOCATION_THRESHOLD, UNVERIFIED_GROUP } from '../../src/router/selection.js'
import type { ExpertHealth } from '../../src/router/health.js'
import type { ExpertRecord } from '../../src/wire/record.js'

interface C { id: string, group: string, latencyMs: number }

function health (latencyMs: number): ExpertHealth {
  return { latencyMs, samples: 1, successes: 1, failures: 0, consecutiveFailures: 0, openUntil: 0 }
}
const record = { maxSlots: 4, freeSlots: 4 } as unknown as ExpertRecord

/** seeded xorshift: the draws are reproducible */
function rng (seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32 }
}

describe('expert selection: Sybil colocation penalty', () => {
  it('groups addresses by IPv4 /24, IPv6 /48 and DNS name; a relayed address has no group of its own', () => {
    assert.equal(addressGroup(multiaddr('/ip4/10.0.0.7/tcp/4001')), 'ip4/10.0.0.0/24')
    assert.equal(addressGroup(multiaddr('/ip4/10.0.0.7/tcp/4001')), addressGroup(multiaddr('/ip4/10.0.0.250/tcp/1')))
    assert.notEqual(addressGroup(multiaddr('/ip4/10.0.0.7/tcp/4001')), addressGroup(multiaddr('/ip4/10.0.1.7/tcp/4001')))
    assert.equal(addressGroup(multiaddr('/ip6/2001:db8:1:2::5/tcp/1')), addressGroup(multiaddr('/ip6/2001:db8:1:ffff::9/tcp/2')))
    assert.notEqual(addressGroup(multiaddr('/ip6/2001:db8:1:2::5/tcp/1')), addressGroup(multiaddr('/ip6/2001:db8:2:2::5/tcp/1')))
    assert.equal(addressGroup(multiaddr('/dns4/Node.Example.org/tcp/1')), 'dns/node.example.org')
    assert.equal(addressGroup(multiaddr('/ip4/1.2.3.4/tcp/1/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit')), undefined)
    assert.equal(addressGroup(undefined), undefined)
  })

  it('groups only by observed connections: Sybils whose records list a different fake IP first, not yet connected, are one group', () => {
    // what the records claim never reaches the grouping: only connections' remote addresses
    const sybils = Array.from({ length: 20 }, (_x, i) => ({ id: `s${i}`, connections: [] }))
    const honest = [
      { id: 'h1', connections: [{ remoteAddr: multiaddr('/ip4/198.51.100.7/tcp/4001') }] },
      { id: 'h2', connections: [{ remoteAddr: multiaddr('/ip4/203.0.113.9/tcp/4001') }] }
    ]
    const groups = observedGroups([...honest, ...sybils])
    assert.ok(sybils.every(x => groups.get(x.id) === UNVERIFIED_GROUP))
    assert.equal(groups.get('h1'), 'ip4/198.51.100.0/24')
    const factors = colocationFactors(groups)
    assert.equal(factors.get('h1'), 1)
    assert.ok((factors.get('s0') ?? 1) < 0.01, `unverified identities share one group: factor ${factors.get('s0')}`)
    // connected ones from one /24 (127.0.9.1 … 127.0.9.20) are one group too, whatever port or host byte
    const connected = observedGroups(sybils.map((x, i) => ({ id: x.id, connections: [{ remoteAddr: multiaddr(`/ip4/127.0.9.${i + 1}/tcp/${40000 + i}`) }] })))
    assert.equal(new Set(connected.values()).size, 1)
    // a connection since closed is still an observation: the last observed group counts, never the record
    assert.equal(observedGroups([{ id: 'gone', connections: [], lastObserved: 'ip4/127.0.9.0/24' }]).get('gone'), 'ip4/127.0.9.0/24')
    // a relayed connection is not an observation of the expert's own address
    assert.equal(observedGroups([{ id: 'r', connections: [{ remoteAddr: multiaddr('/ip4/1.2.3.4/tcp/1/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit') }] }]).get('r'), UNVERIFIED_GROUP)
  })

  it('no penalty up to the threshold; beyond it 1 / (1 + (n − t)²) per member, so a group weighs less the more identities it adds', () => {
    const groups = (n: number): Map<string, string | undefined> => new Map(Array.from({ length: n }, (_x, i) => [`s${i}`, 'ip4/1.2.3.4']))
    assert.equal(colocationFactors(groups(COLOCATION_THRESHOLD)).get('s0'), 1)
    const total = (n: number): number => [...colocationFactors(groups(n)).values()].reduce((a, b) => a + b, 0)
    assert.ok(total(10) < total(5) && total(100) < total(10) && total(100) < 0.02)
    // experts without an address are their own group
    assert.equal(colocationFactors(new Map([['x', undefined], ['y', undefined], ['z', undefined], ['w', undefined]])).get('x'), 1)
  })

  it('100 identities on one address, as fast as the honest experts, get ≤ 5 % of steps against 2 honest experts', () => {
    // (a claimed 10× speed counts for nothing here: the router floors an unmeasured expert's
    // latency prior at the median measured latency, test/integration/byzantine.spec.ts)
    const pool: C[] = [{ id: 'h1', group: 'ip4/10.0.0.1', latencyMs: 10 }, { id: 'h2', group: 'ip4/10.0.0.2', latencyMs: 10 }]
    for (let i = 0; i < 100; i++) pool.push({ id: `s${i}`, group: 'ip4/10.0.0.9', latencyMs: 10 })
    const factors = colocationFactors(new Map(pool.map(c => [c.id, c.group])))
    const random = rng(7)
    for (const k of [1, 2]) {
      let sybil = 0
      const steps = 5_000
      for (let i = 0; i < steps; i++) {
        const chosen = selectExperts(pool, k, c => health(c.latencyMs), () => record, { colocation: c => factors.get(c.id) ?? 1 }, random)
        sybil += chosen.filter(c => c.id.startsWith('s')).length
      }
      const share = sybil / (steps * k)
      assert.ok(share <= 0.05, `K=${k}: Sybil share ${(100 * share).toFixed(1)} %`)
      // without the penalty they would take most of the steps
      let unpenalised = 0
      for (let i = 0; i < 500; i++) unpenalised += selectExperts(pool, k, c => health(c.latencyMs), () => record, {}, random).filter(c => c.id.startsWith('s')).length
      assert.ok(unpenalised / (500 * k) > 0.5)
    }
  })

  it('the penalty is relative: experts all on one address are chosen as without it', () => {
    const pool: C[] = Array.from({ length: 8 }, (_x, i) => ({ id: `e${i}`, group: 'ip4/127.0.0.1', latencyMs: 10 + i }))
    const factors = colocationFactors(new Map(pool.map(c => [c.id, c.group])))
    const a = rng(3)
    const b = rng(3)
    for (let i = 0; i < 200; i++) {
      const x = selectExperts(pool, 3, c => health(c.latencyMs), () => record, { colocation: c => factors.get(c.id) ?? 1 }, a).map(c => c.id)
      const y = selectExperts(pool, 3, c => health(c.latencyMs), () => record, {}, b).map(c => c.id)
      assert.deepEqual(x, y)
    }
  })
})

describe('BUSY is not a failure of the expert', () => {
  it('isBusy: an ExpertError with status BUSY only (a generation leaves that expert out; its circuit stays closed)', async () => {
    const { isBusy } = await import('../../src/router/generation.js')
    const { ExpertError } = await import('../../src/util/errors.js')
    const { Status } = await import('../../src/wire/types.js')
    assert.equal(isBusy(new ExpertError('BUSY: 2 sessions', Status.BUSY)), true)
    for (const s of [Status.INTERNAL, Status.INVALID_REQUEST, Status.CONTEXT_FULL, Status.INCOMPATIBLE]) assert.equal(isBusy(new ExpertError('x', s)), false)
    assert.equal(isBusy(new Error('BUSY')), false)
  })
})
