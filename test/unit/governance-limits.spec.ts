/* Keys of the governance rate limits, and what counts as the development governance. */
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { addressKey } from '../../src/governance/service.js'
import { defaultConfig, isDevGovernance, validateConfig } from '../../src/governance/config.js'

describe('governance limits', () => {
  it('rate limits count IPv4 addresses and IPv6 /64s (one host has a whole /64), never peer ids', () => {
    const key = (a: string): string => addressKey({ remoteAddr: multiaddr(a) })
    assert.equal(key('/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'), '203.0.113.7')
    assert.equal(key('/ip6/2001:db8:1:2::5/tcp/1'), key('/ip6/2001:db8:1:2:ffff:1:2:3/tcp/2'))
    assert.equal(key('/ip6/2001:0db8:0001:0002::5/tcp/1'), '2001:db8:1:2::/64')
    assert.notEqual(key('/ip6/2001:db8:1:2::5/tcp/1'), key('/ip6/2001:db8:1:3::5/tcp/1'))
    assert.equal(key('/ip6/::1/tcp/1'), '0:0:0:0::/64')
  })

  it('any config that trusts a published development key is the development governance, whatever its mesh id', async () => {
    const dev = defaultConfig()
    const mine = (await generateKeyPair('Ed25519')).publicKey.raw
    assert.equal(isDevGovernance(dev), true)
    assert.equal(isDevGovernance({ ...dev, meshId: 'renamed' }), true)
    const mixed = validateConfig({ ...dev, meshId: 'mixed', keyholders: [...dev.keyholders.slice(0, 1), { publicKey: mine }], thresholds: { halt: 1, resume: 2, deployMinor: 2, deployMajor: 2, phase: 2, keyholders: 2, cancel: 2 } })
    assert.equal(isDevGovernance(mixed), true)
    assert.equal(isDevGovernance({ ...mixed, keyholders: [{ publicKey: mine }] }), false)
  })
})
