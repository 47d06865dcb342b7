/**
 * Every change the mesh applies to itself is recorded with how to undo it, so a HALT can
 * revert the last `config.revertOnHalt` changes (newest first). Spec: protocols/governance.md §7.
 *
 * Entries are kept in memory and, when a file is given, persisted as JSON (atomically). Undo
 * functions cannot be persisted: after a restart, `attachUndo` re-registers them; an entry
 * without one is reported as failed by `revertLast`, never silently skipped.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { GovernanceConfig } from './config.js'
import type { Tier } from './tiers.js'
import { errorMessage } from '../util/errors.js'

export interface ChangeRecord {
  id: string
  description: string
  tier: Tier
  appliedAtMs: number
}

export interface ChangeEntry extends ChangeRecord {
  revertedAtMs?: number
  /** the error of the last failed undo */
  revertError?: string
}

export interface RevertReport {
  /** ids of the changes reverted, newest first */
  reverted: string[]
  /** changes whose undo threw (or that have no undo), newest first */
  failed: Array<{ id: string, error: string }>
}

export type Undo = () => Promise<void> | void

const MAX_ENTRIES = 1000

export class ChangeLog {
  private list: ChangeEntry[] = []
  private readonly undos = new Map<string, Undo>()
  private queue: Promise<unknown> = Promise.resolve()

  constructor (private readonly file?: string, private readonly now: () => number = Date.now) {
    if (file != null && existsSync(file)) {
      const j = JSON.parse(readFileSync(file, 'utf8'))
      if (j?.format !== 1 || !Array.isArray(j.entries)) throw new Error(`${file} is not a meshllm change log`)
      this.list = j.entries
    }
  }

  /** Records an applied change and its undo. Ids are unique. */
  record (change: ChangeRecord, undo: Undo): ChangeEntry {
    if (typeof change.id !== 'string' || change.id.length === 0) throw new TypeError('a change needs an id')
    if (this.list.some(e => e.id === change.id)) throw new Error(`change "${change.id}" is already recorded`)
    const entry: ChangeEntry = { id: change.id, description: change.description, tier: change.tier, appliedAtMs: change.appliedAtMs }
    this.list.push(entry)
    this.undos.set(entry.id, undo)
    while (this.list.length > MAX_ENTRIES) this.undos.delete(this.list.shift()!.id)
    this.persist()
    return { ...entry }
  }

  /** Re-registers the undo of an entry loaded from the file. */
  attachUndo (id: string, undo: Undo): void {
    if (!this.list.some(e => e.id === id)) throw new Error(`no change "${id}"`)
    this.undos.set(id, undo)
  }

  /** copies of every entry, oldest first */
  entries (): ChangeEntry[] {
    return this.list.map(e => ({ ...e }))
  }

  /**
   * Reverts the newest `n` changes not yet reverted, newest first. An undo that throws is
   * reported (and left unreverted), not fatal: the others still run. Calls are serialised.
   */
  async revertLast (n: number): Promise<RevertReport> {
    const run = this.queue.then(async () => await this.revert(n))
    this.queue = run.catch(() => {})
    return await run
  }

  private async revert (n: number): Promise<RevertReport> {
    const report: RevertReport = { reverted: [], failed: [] }
    const k = Math.floor(n)
    if (!(k >= 1)) return report
    const todo = this.list.filter(e => e.revertedAtMs == null).slice(-k).reverse()
    for (const e of todo) {
      const undo = this.undos.get(e.id)
      try {
        if (undo == null) throw new Error('no undo registered (recorded before a restart?)')
        await undo()
        e.revertedAtMs = this.now()
        delete e.revertError
        report.reverted.push(e.id)
      } catch (err) {
        e.revertError = errorMessage(err)
        report.failed.push({ id: e.id, error: e.revertError })
      }
    }
    this.persist()
    return report
  }

  private persist (): void {
    if (this.file == null) return
    mkdirSync(dirname(this.file), { recursive: true })
    const tmp = `${this.file}.tmp`
    writeFileSync(tmp, JSON.stringify({ format: 1, entries: this.list }))
    renameSync(tmp, this.file)
  }
}

/** On a HALT: revert the last config.revertOnHalt changes. */
export async function revertOnHalt (log: ChangeLog, config: Pick<GovernanceConfig, 'revertOnHalt'>): Promise<RevertReport> {
  return await log.revertLast(config.revertOnHalt)
}
