/**
 * How many sessions an expert serves (src/expert/sessions.ts): 'auto', the default, from
 * node-llama-cpp's memory estimate, within its bounds; `join --max-sessions` checked once.
 */
import assert from 'node:assert/strict'
import { AUTO_MAX_SESSIONS, AUTO_MIN_SESSIONS, AUTO_SESSION_MEMORY_SHARE, MAX_SESSIONS, autoSessions } from '../../src/expert/sessions.js'
import { run } from '../../src/cli/main.js'

const MiB = 2 ** 20
const isUsage = (err: any): boolean => err?.name === 'UsageError'

describe('expert sessions', () => {
  it("'auto' fits the sessions' KV cache in a quarter of the free memory, within [4, 16]", () => {
    // exactly n sessions fit: n, at both ends of the range and inside it
    for (const n of [AUTO_MIN_SESSIONS, 9, AUTO_MAX_SESSIONS]) {
      assert.equal(autoSessions(100 * MiB, n * 100 * MiB / AUTO_SESSION_MEMORY_SHARE), n)
      assert.equal(autoSessions(100 * MiB, n * 100 * MiB / AUTO_SESSION_MEMORY_SHARE - 1), Math.max(AUTO_MIN_SESSIONS, n - 1))
    }
    assert.equal(autoSessions(0.5 * MiB, 20_000 * MiB), AUTO_MAX_SESSIONS) // the test models: tiny sequences
    assert.equal(autoSessions(1024 * MiB, 18_000 * MiB), AUTO_MIN_SESSIONS) // an 8B model at 8K context
    assert.equal(autoSessions(1024 * MiB, 0), AUTO_MIN_SESSIONS)
    for (const bad of [0, -1, NaN, Infinity]) assert.equal(autoSessions(bad, 1e12), AUTO_MIN_SESSIONS)
    assert.equal(autoSessions(MiB, NaN), AUTO_MIN_SESSIONS)
  })

  it('join --max-sessions: auto or an integer in [1, 1024], refused before anything loads', async () => {
    for (const bad of ['0', String(MAX_SESSIONS + 1), 'many', '2.5']) {
      await assert.rejects(run(['join', '--model', 'meshtest-c', '--max-sessions', bad]), isUsage, bad)
    }
  })
})
