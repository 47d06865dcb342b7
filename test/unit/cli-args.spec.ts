import assert from 'node:assert/strict'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { intOption, parse } from '../../src/cli/args.js'
import { governanceCommand, signCommand } from '../../src/cli/governance-cli.js'
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

  it('parse refuses unknown options and a missing value with a UsageError', () => {
    assert.throws(() => parse(['--nope'], { out: { type: 'string' } }), isUsage)
    assert.throws(() => parse(['--out'], { out: { type: 'string' } }), isUsage)
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
        await assert.rejects(signCommand([...args, '--key', KEY, '--out', out], parse), isUsage, args.join(' '))
        await assert.rejects(stat(out), (err: any) => err.code === 'ENOENT', `${args.join(' ')} wrote nothing`)
      }
      // at the bound: accepted
      await signCommand(['halt', '--ttl-hours', String(maxHours), '--key', KEY, '--out', out], parse)
      assert.ok((await stat(out)).size > 0)
      const pub = Buffer.from((await loadKeyholderKey(KEY)).publicKey).toString('hex')
      for (const hours of ['soon', '-1', String(24 * 365 + 1)]) {
        await assert.rejects(governanceCommand(['init', '--keyholder', pub, '--out', join(dir, 'g.json'), '--review-hours', hours], parse), isUsage, hours)
      }
      await assert.rejects(stat(join(dir, 'g.json')), (err: any) => err.code === 'ENOENT')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
