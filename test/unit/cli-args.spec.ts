import assert from 'node:assert/strict'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { intOption } from '../../src/cli/args.js'
import { run } from '../../src/cli/main.js'
import { MAX_LIFETIME_MS } from '../../src/governance/envelope.js'
import { loadKeyholderKey } from '../../src/governance/keys.js'

const KEY = join(process.cwd(), 'test/fixtures/keys/dev-1.key')
const isUsage = (err: any): boolean => err?.name === 'UsageError'

describe('CLI arguments: one parser, integers checked at their bounds', () => {
  it('intOption accepts the bounds and refuses one past them, non-integers and empty strings', () => {
    assert.equal(intOption(undefined, 'n', 1, 5), undefined)
    assert.equal(intOption('1', 'n', 1, 5), 1)
    assert.equal(intOption('5', 'n', 1, 5), 5)
    for (const bad of ['0', '6', '2.5', 'abc', '', ' ', 'NaN', '1e400']) assert.throws(() => intOption(bad, 'n', 1, 5), isUsage, bad)
  })

  it('the parser refuses unknown options, missing values and unknown commands with a UsageError', async () => {
    await assert.rejects(run(['keys', 'generate', '--nope']), isUsage)
    await assert.rejects(run(['keys', 'generate', '--out']), isUsage)
    await assert.rejects(run(['sign', 'halt', '--key', KEY, '--out']), isUsage)
    await assert.rejects(run(['nope']), isUsage)
    await assert.rejects(run([]), isUsage)
  })

  it('sign refuses bad numbers and kinds before writing anything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshllm-sign-'))
    const out = join(dir, 'm.gov')
    const maxHours = MAX_LIFETIME_MS / 3_600_000
    try {
      for (const args of [
        ['resume', '--lifts', 'abc'],
        ['resume', '--lifts', '0'],
        ['halt', '--ttl-hours', String(maxHours + 1)],
        ['halt', '--ttl-hours', '0'],
        ['halt', '--version', '-3'],
        ['phase', '7'],
        ['phase'],
        ['vote', 'zz'],
        ['vote', 'a'.repeat(64)] // neither --approve nor --reject
      ]) {
        await assert.rejects(run(['sign', ...args, '--key', KEY, '--out', out]), isUsage, args.join(' '))
        await assert.rejects(stat(out), (err: any) => err.code === 'ENOENT', `${args.join(' ')} wrote nothing`)
      }
      // at the bound: accepted
      await run(['sign', 'halt', '--ttl-hours', String(maxHours), '--key', KEY, '--out', out])
      assert.ok((await stat(out)).size > 0)
      const pub = Buffer.from((await loadKeyholderKey(KEY)).publicKey).toString('hex')
      for (const hours of ['soon', '-1', String(24 * 365 + 1)]) {
        await assert.rejects(run(['governance', 'init', '--keyholder', pub, '--out', join(dir, 'g.json'), '--review-hours', hours]), isUsage, hours)
      }
      await assert.rejects(stat(join(dir, 'g.json')), (err: any) => err.code === 'ENOENT')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
