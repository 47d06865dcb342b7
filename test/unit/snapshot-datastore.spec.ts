/* The peer store's file: saved on close, loaded on open, a damaged file ignored; a real node's peers survive its restart. */
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { Key } from 'interface-datastore/key'
import { SnapshotDatastore, decodeSnapshot, encodeSnapshot } from '../../src/node/snapshot-datastore.js'
import { createMeshNode } from '../../src/node/node.js'

describe('snapshot datastore (the peer store on disk)', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'meshllm-ds-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('property: decode(encode(entries)) = entries; a truncated file decodes to a prefix of them or nothing, never throws', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.string(), fc.uint8Array({ maxLength: 64 })), { maxLength: 20 }), fc.nat(), (entries, cut) => {
      const plain = entries.map(([k, v]) => [k, [...v]])
      const bytes = encodeSnapshot(entries)
      assert.deepEqual(decodeSnapshot(bytes).map(([k, v]) => [k, [...v]]), plain)
      const d = decodeSnapshot(bytes.subarray(0, cut % bytes.byteLength)).map(([k, v]) => [k, [...v]])
      assert.deepEqual(d, plain.slice(0, d.length))
    }))
  })

  it('saves on close, loads on open; a damaged file is an empty store', async () => {
    const path = join(dir, 'a.db')
    const ds = await SnapshotDatastore.open(path)
    await ds.put(new Key('/peers/x'), Uint8Array.of(1, 2, 3))
    await ds.close()
    const again = await SnapshotDatastore.open(path)
    assert.deepEqual([...await again.get(new Key('/peers/x'))], [1, 2, 3])
    await again.close()
    const bytes = await readFile(path)
    await writeFile(path, bytes.subarray(0, bytes.byteLength - 1))
    const damaged = await SnapshotDatastore.open(path)
    assert.equal(await damaged.has(new Key('/peers/x')), false)
    await damaged.close()
  })

  it('a node with a data directory knows its peers after a restart', async () => {
    const dataDir = join(dir, 'node')
    const other = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    let node = await createMeshNode({ dataDir })
    try {
      await node.dial(other.getMultiaddrs()[0])
      await node.stop()
      node = await createMeshNode({ dataDir })
      const peer = await node.peerStore.get(other.peerId)
      assert.ok(peer.addresses.length > 0, 'the peer and its addresses are known again')
    } finally {
      await node.stop()
      await other.stop()
    }
  })
})
