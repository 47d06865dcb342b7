/**
 * Progress on stderr. On a terminal: one line redrawn in place (`\r`). Anywhere else (a log
 * file, a pipe, CI): whole lines, one per `step` percent, so a log never fills with `\r`
 * updates.
 */
export interface ProgressOptions {
  /** bar width in characters (terminal only; 0: no bar) */
  width?: number
  /** where to write (default: process.stderr) */
  stream?: { write: (s: string) => unknown, isTTY?: boolean }
  /** redraw in place (default: whether the stream is a terminal) */
  tty?: boolean
  /** percent between two lines when not a terminal (default 10) */
  step?: number
}

export class ProgressBar {
  private last = -1
  private readonly width: number
  private readonly stream: NonNullable<ProgressOptions['stream']>
  private readonly tty: boolean
  private readonly step: number

  constructor (private readonly label: string, opts: ProgressOptions = {}) {
    this.width = opts.width ?? 30
    this.stream = opts.stream ?? process.stderr
    this.tty = opts.tty ?? this.stream.isTTY === true
    this.step = Math.max(1, Math.min(100, opts.step ?? 10))
  }

  /** `fraction` done (0…1); `detail` follows the percentage (e.g. "120/1500 positions") */
  update (fraction: number, detail?: string): void {
    const pct = Math.max(0, Math.min(100, Math.floor(fraction * 100)))
    const tail = detail != null ? ` ${detail}` : ''
    if (this.tty) {
      if (pct === this.last && detail == null) return
      this.last = pct
      const filled = Math.round(this.width * pct / 100)
      const bar = this.width > 0 ? ` [${'#'.repeat(filled)}${'.'.repeat(this.width - filled)}]` : ''
      this.stream.write(`\r${this.label}${bar} ${pct}%${tail}`)
      return
    }
    // whole lines: the first update, then each time a step is crossed, and 100 %
    const bucket = pct === 100 ? 100 : pct - pct % this.step
    if (bucket <= this.last) return
    this.last = bucket
    this.stream.write(`${this.label} ${pct}%${tail}\n`)
  }

  /** ends the terminal line (nothing to do for whole lines) */
  done (): void {
    if (this.tty && this.last >= 0) this.stream.write('\n')
  }
}
