/**
 * ExpertAdvertiser signs with the key it is given (no hidden per-node table): the record a
 * peer reads from the DHT opens and names the node; a key that is not the node's identity is
 * refused at construction (WrongIdentityKeyError); the node's NodeKey service holds libp2p's
 * Components.privateKey.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import type { PrivateKey } from '@libp2p/interface'
import { createMeshNode, connectBootstrap, nodePrivateKey, type MeshNode } from '../../src/node/node.js'
import { ExpertAdvertiser } from '../../src/expert/advertise.js'
import { ModelHost } from '../../src/expert/model-host.js'
import { resolveModel } from '../../src/expert/resolve.js'
import { expertRecordKey, openExpertRecord } from '../../src/wire/record.js'

describe('ExpertAdvertiser: the identity key passed explicitly', function () {
  this.timeout(120_000)
  const log = defaultLogger().forComponent('meshllm:test:advertise')
  let host: ModelHost
  let key: PrivateKey
  let expert: MeshNode
  let reader: MeshNode

  before(async () => {
    host = await ModelHost.load({ modelPath: await resolveModel('meshtest-c'), threads: 1, maxSessions: 1 })
    key = await generateKeyPair('Ed25519')
    expert = await createMeshNode({ privateKey: key })
    reader = await createMeshNode()
    await connectBootstrap(reader, [expert.getMultiaddrs()[0].toString()])
  })

  after(async () => {
    await expert?.stop()
    await reader?.stop()
    await host?.close()
  })

  it('the NodeKey service holds the key the node was created with', () => {
    assert.ok(nodePrivateKey(expert).equals(key))
  })

  it('publishes a record signed with the given key; a peer reads it from the DHT', async () => {
    const adv = new ExpertAdvertiser(expert, host, { privateKey: key, tokensPerSecond: 7 }, log)
    await adv.publish()
    let found
    for await (const ev of reader.services.dht.get(expertRecordKey(expert.peerId), { signal: AbortSignal.timeout(20_000) })) {
      if (ev.name === 'VALUE') { found = ev.value; break }
    }
    assert.ok(found != null, 'the record is on the DHT')
    const r = await openExpertRecord(found)
    assert.ok(r.peerId.equals(expert.peerId))
    assert.equal(r.tokensPerSecond, 7)
  })

  it('a key that is not the node\'s identity is refused before anything is signed', async () => {
    const other = await generateKeyPair('Ed25519')
    assert.throws(() => new ExpertAdvertiser(expert, host, { privateKey: other, tokensPerSecond: 7 }, log), { name: 'WrongIdentityKeyError' })
  })
})
