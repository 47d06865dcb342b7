/** A one-line progress bar on stderr (only used when stderr is a terminal). */
export class ProgressBar {
  private last = -1
  constructor (private readonly label: string, private readonly width = 30) {}

  update (fraction: number): void {
    const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)))
    if (pct === this.last) return
    this.last = pct
    const filled = Math.round(this.width * pct / 100)
    process.stderr.write(`\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(this.width - filled)}] ${pct}%`)
  }

  done (): void {
    if (this.last >= 0) process.stderr.write('\n')
  }
}
