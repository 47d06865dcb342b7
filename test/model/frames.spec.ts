/**
 * Model-dependent: the expert's top-256 frame against node-llama-cpp's own full-vocabulary
 * distribution, and the tokenizer fingerprint across real GGUFs.
 */
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ModelHost } from '../../src/expert/model-host.js'
import { AUTO_MAX_SESSIONS } from '../../src/expert/sessions.js'
import { resolveModel } from '../../src/expert/resolve.js'
import { summarizeGguf, tokenizerFingerprint } from '../../src/expert/tokenizer.js'
import { decodeFrame, encodeFrame } from '../../src/wire/frame.js'
import { writeSwappedVocabGguf } from '../helpers/gguf-patch.js'

describe('expert frames (meshtest-c, real model)', function () {
  this.timeout(120_000)
  let host: ModelHost

  before(async () => {
    host = await ModelHost.load({ modelPath: await resolveModel('meshtest-c'), threads: 1, maxSessions: 2 })
  })
  after(async () => { await host?.close() })

  it("maxSessions 'auto' (the default): node-llama-cpp's estimate of a sequence against the free RAM gives the most, 16, for a test model", async () => {
    const auto = await ModelHost.load({ modelPath: await resolveModel('meshtest-c'), threads: 1 })
    try {
      // a meshtest-c sequence of its 512-token context costs well under 1 MiB: 16 fit anywhere the suite runs
      assert.equal(auto.maxSessions, AUTO_MAX_SESSIONS)
      const sessions = Array.from({ length: AUTO_MAX_SESSIONS }, () => auto.openSession())
      assert.equal(auto.freeSlots, 0)
      assert.throws(() => auto.openSession(), (err: any) => err?.name === 'BusyError')
      await Promise.all(sessions.map(async s => { await s.close() }))
    } finally {
      await auto.close()
    }
  })

  it('top-256 logprobs and tail mass match the full-vocabulary distribution', async () => {
    const tokens = host.model.tokenize('The kernel module is loaded when') as number[]
    const s = host.openSession()
    const frame = await s.append([host.summary.bosTokenId!, ...tokens])
    await s.close()
    assert.equal(frame.ids.length, 256)
    // reference: node-llama-cpp's full probability map for the same context
    const ref = host.context.getSequence()
    let full: Map<number, number> | undefined
    // eslint-disable-next-line no-unreachable-loop -- the first output is the one asked for
    for await (const out of ref.evaluateWithMetadata([host.summary.bosTokenId!, ...tokens] as any, { probabilities: true }, { temperature: 0 })) {
      full = out.probabilities as Map<number, number>
      break
    }
    ref.dispose()
    assert.ok(full != null && full.size === 128256)
    const top = [...full.entries()].slice(0, 256)
    let listedMass = 0
    for (let i = 0; i < frame.ids.length; i++) {
      const p = full.get(frame.ids[i])!
      listedMass += p
      assert.ok(Math.abs(Math.exp(frame.logprobs[i]) - p) <= 1e-4 + 1e-3 * p, `token ${frame.ids[i]}: ${Math.exp(frame.logprobs[i])} vs ${p}`)
    }
    // the listed ids are the 256 most probable (up to ties at the boundary)
    const minListed = Math.min(...[...frame.ids].map(id => full!.get(id)!))
    assert.ok(minListed >= top[255][1] - 1e-7)
    assert.ok(Math.abs(frame.tailMass - (1 - listedMass)) < 1e-3, `tail ${frame.tailMass} vs ${1 - listedMass}`)
  })

  it('a frame survives the wire within the documented precision and size', async () => {
    const s = host.openSession()
    const frame = await s.append([host.summary.bosTokenId!, ...host.model.tokenize('import os') as number[]])
    await s.close()
    const bytes = encodeFrame(frame)
    assert.ok(bytes.length < 1200, `frame is ${bytes.length} bytes`)
    const back = decodeFrame(bytes)
    const byId = new Map([...frame.ids].map((id, i) => [id, frame.logprobs[i]]))
    for (let i = 0; i < back.ids.length; i++) {
      assert.ok(Math.abs(back.logprobs[i] - byId.get(back.ids[i])!) <= 1 / 2048 + 1e-6)
    }
  })

  it('catch-up of several tokens in one batch gives the same frame as one by one', async () => {
    const toks = [host.summary.bosTokenId!, ...host.model.tokenize('git commit -m') as number[]]
    const a = host.openSession()
    const b = host.openSession()
    let fa = await a.append(toks.slice(0, 2))
    for (let i = 2; i < toks.length; i++) fa = await a.append([toks[i]])
    const fb = await b.append(toks)
    await a.close(); await b.close()
    assert.deepEqual([...fa.ids].slice(0, 10), [...fb.ids].slice(0, 10))
    for (let i = 0; i < 10; i++) assert.ok(Math.abs(fa.logprobs[i] - fb.logprobs[i]) < 1e-3)
  })

  it('refuses a session beyond the slot limit with BusyError', async () => {
    const a = host.openSession()
    const b = host.openSession()
    assert.throws(() => host.openSession(), (e: any) => e.name === 'BusyError')
    await a.close(); await b.close()
  })

  it('refuses tokens past the context with ContextOverflowError', async () => {
    const s = host.openSession()
    await assert.rejects(s.append(new Array(host.contextSize).fill(100)), (e: any) => e.name === 'ContextOverflowError')
    await s.close()
  })
})

describe('tokenizer fingerprint (real GGUFs)', function () {
  this.timeout(60_000)

  it('the three bundled models share one fingerprint', async () => {
    const fps = await Promise.all(['meshtest-a', 'meshtest-b', 'meshtest-c'].map(async m => (await summarizeGguf(await resolveModel(m))).fingerprint))
    assert.deepEqual(fps[0], fps[1])
    assert.deepEqual(fps[0], fps[2])
  })

  it('a GGUF with two vocabulary entries swapped gets another fingerprint', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshllm-fp-'))
    const bad = join(dir, 'swapped.gguf')
    const src = await resolveModel('meshtest-c')
    await writeSwappedVocabGguf(src, bad)
    const [a, b] = await Promise.all([summarizeGguf(src), summarizeGguf(bad)])
    assert.notDeepEqual(a.fingerprint, b.fingerprint)
  })

  it('renamed special tokens (LLaMA-3 vs 3.1/3.2) keep the fingerprint; a changed normal token does not', () => {
    const tokens = ['a', 'b', 'ab', '<|begin_of_text|>', '<|reserved_special_token_0|>']
    const tokenType = [1, 1, 1, 3, 3]
    const base = { model: 'gpt2', pre: 'llama-bpe', tokens, tokenType, merges: ['a b'], bosTokenId: 3 }
    const renamed = { ...base, tokens: ['a', 'b', 'ab', '<|begin_of_text|>', '<|start_header_id|>'] }
    const changed = { ...base, tokens: ['a', 'b', 'ba', '<|begin_of_text|>', '<|reserved_special_token_0|>'] }
    const otherMerges = { ...base, merges: ['b a'] }
    const otherBos = { ...base, bosTokenId: 4 }
    const fp = tokenizerFingerprint(base)
    assert.deepEqual(tokenizerFingerprint(renamed), fp)
    assert.notDeepEqual(tokenizerFingerprint(changed), fp)
    assert.notDeepEqual(tokenizerFingerprint(otherMerges), fp)
    assert.notDeepEqual(tokenizerFingerprint(otherBos), fp)
  })
})
