/**
 * The expert's wait for a session slot. An open that finds every slot taken (or its peer at
 * its per-peer quota) waits here instead of being refused at once: when a session ends, the
 * earliest waiter that can be admitted now is admitted (first come, first served among those
 * the quotas allow, so one peer's queued opens cannot hold back another peer's). A waiter
 * leaves with QueueTimeoutError after `timeoutMs`, with QueueFullError at once when the queue
 * (or its peer's share of it) is full, and with its signal's reason when its stream goes away
 * or the mesh halts. Every bound is a number the operator sets; a remote peer picks none.
 */

/** the queue (or the peer's share of it) is full: answered BUSY at once */
export class QueueFullError extends Error {
  static override name = 'QueueFullError'
  override name = 'QueueFullError'
}

/** no slot became free within the queue's timeout: answered BUSY */
export class QueueTimeoutError extends Error {
  static override name = 'QueueTimeoutError'
  override name = 'QueueTimeoutError'
}

export interface SlotQueueInit {
  /** opens waiting in all; more are refused at once (QueueFullError). 0: no queue */
  maxQueued: number
  /** opens one peer may have waiting; more are refused at once (QueueFullError) */
  maxQueuedPerPeer: number
  /** how long an open waits for a slot before QueueTimeoutError (ms) */
  timeoutMs: number
}

interface Waiter<T> {
  peer: string
  /** claims the slot synchronously, or undefined when the quotas do not allow it yet */
  tryAcquire: () => T | undefined
  resolve: (value: T) => void
  reject: (err: unknown) => void
}

export class SlotQueue {
  private readonly waiters: Array<Waiter<any>> = []
  private readonly byPeer = new Map<string, number>()
  /** waiters admitted after waiting, and the time they waited in all (ms) */
  readonly stats = { queued: 0, admitted: 0, timedOut: 0, refusedFull: 0, waitedMs: 0 }

  constructor (readonly limits: SlotQueueInit) {}

  /** opens of peers other than `peer` waiting now */
  waitingOthers (peer: string): number {
    return this.waiters.length - (this.byPeer.get(peer) ?? 0)
  }

  /** opens waiting now */
  get length (): number {
    return this.waiters.length
  }

  /**
   * A slot for `peer`: at once when `tryAcquire` succeeds and nobody admissible waits ahead,
   * else after waiting (see the module comment). `tryAcquire` must claim the slot in the same
   * synchronous call that checks it (two waiters woken together never share one slot).
   * `onQueued` runs once the Open waits in the queue (not when it is admitted or refused at once).
   */
  async acquire<T>(peer: string, tryAcquire: () => T | undefined, signal: AbortSignal, onQueued?: () => void): Promise<T> {
    signal.throwIfAborted()
    if (this.waiters.length === 0) {
      const now = tryAcquire()
      if (now !== undefined) return now
    }
    const mine = this.byPeer.get(peer) ?? 0
    if (this.waiters.length >= this.limits.maxQueued || mine >= this.limits.maxQueuedPerPeer) {
      this.stats.refusedFull++
      throw new QueueFullError(this.waiters.length >= this.limits.maxQueued
        ? `every session slot is in use and ${this.waiters.length} open(s) already wait (at most ${this.limits.maxQueued})`
        : `this peer already has ${mine} open(s) waiting here (at most ${this.limits.maxQueuedPerPeer})`)
    }
    this.stats.queued++
    const since = performance.now()
    return await new Promise<T>((resolve, reject) => {
      const leave = (): boolean => {
        const i = this.waiters.indexOf(waiter)
        if (i < 0) return false
        this.waiters.splice(i, 1)
        const n = (this.byPeer.get(peer) ?? 1) - 1
        if (n <= 0) this.byPeer.delete(peer)
        else this.byPeer.set(peer, n)
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        return true
      }
      const onAbort = (): void => { if (leave()) reject(signal.reason) }
      const timer = setTimeout(() => {
        if (!leave()) return
        this.stats.timedOut++
        reject(new QueueTimeoutError(`no session slot became free within ${this.limits.timeoutMs} ms`))
      }, this.limits.timeoutMs)
      const waiter: Waiter<T> = {
        peer,
        tryAcquire,
        resolve: (value) => {
          leave()
          this.stats.admitted++
          this.stats.waitedMs += performance.now() - since
          resolve(value)
        },
        reject: (err) => { leave(); reject(err) }
      }
      this.waiters.push(waiter)
      this.byPeer.set(peer, mine + 1)
      signal.addEventListener('abort', onAbort, { once: true })
      onQueued?.()
      // a slot may have freed between the first try and now (or the queue was not empty)
      this.wake()
    })
  }

  /** a slot (or a peer's quota) freed: admits every waiter, earliest first, that can be now */
  wake (): void {
    for (const w of [...this.waiters]) {
      let value
      try {
        value = w.tryAcquire()
      } catch (err) {
        w.reject(err)
        continue
      }
      if (value !== undefined) w.resolve(value)
    }
  }

  /** every waiter leaves with `err` (the service stops) */
  clear (err: Error): void {
    for (const w of [...this.waiters]) w.reject(err)
  }
}
