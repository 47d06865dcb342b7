/**
 * A userspace TCP proxy that delays every byte by a fixed one-way latency in both
 * directions, preserving order (this kernel has no netem). Each chunk read from one side is
 * written to the other side `delayMs` after it was read; chunks are queued per direction so
 * a later chunk never overtakes an earlier one.
 */
import net from 'node:net'

export interface DelayProxy {
  port: number
  /** changes the one-way delay for bytes read from now on */
  setDelay: (ms: number) => void
  close: () => Promise<void>
  /** bytes forwarded client→target and target→client */
  bytes: { up: number, down: number }
}

function delayedPipe (from: net.Socket, to: net.Socket, delay: { ms: number }, count: (n: number) => void): void {
  const queue: Array<{ at: number, data: Buffer }> = []
  let timer: NodeJS.Timeout | undefined
  let ended = false
  const flush = (): void => {
    timer = undefined
    const now = performance.now()
    while (queue.length > 0 && queue[0].at <= now + 0.5) {
      const c = queue.shift()!
      if (!to.destroyed) to.write(c.data)
    }
    if (queue.length > 0) timer = setTimeout(flush, Math.max(0, queue[0].at - performance.now()))
    else if (ended && !to.destroyed) to.end()
  }
  from.on('data', (data: Buffer) => {
    count(data.length)
    // never earlier than the chunk before it (order is preserved when the delay drops)
    const at = Math.max(performance.now() + delay.ms, queue.length > 0 ? queue[queue.length - 1].at : 0)
    queue.push({ at, data })
    if (timer == null) timer = setTimeout(flush, Math.max(0, at - performance.now()))
  })
  from.on('end', () => {
    ended = true
    if (timer == null && queue.length === 0 && !to.destroyed) to.end()
  })
  from.on('error', () => { to.destroy() })
}

/** Proxies 127.0.0.1:<port> → targetHost:targetPort with `delayMs` one way. */
export async function startDelayProxy (targetPort: number, delayMs: number, listenPort = 0, targetHost = '127.0.0.1'): Promise<DelayProxy> {
  const sockets = new Set<net.Socket>()
  const bytes = { up: 0, down: 0 }
  const delay = { ms: delayMs }
  const server = net.createServer((client) => {
    client.setNoDelay(true)
    const target = net.connect(targetPort, targetHost)
    target.setNoDelay(true)
    sockets.add(client); sockets.add(target)
    client.on('close', () => { sockets.delete(client); target.destroy() })
    target.on('close', () => { sockets.delete(target); client.destroy() })
    delayedPipe(client, target, delay, n => { bytes.up += n })
    delayedPipe(target, client, delay, n => { bytes.down += n })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listenPort, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    bytes,
    setDelay: (ms: number) => { delay.ms = ms },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

/** A free TCP port on 127.0.0.1 (for an expert's listen address behind a proxy). */
export async function freePort (): Promise<number> {
  const s = net.createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', () => resolve()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}
