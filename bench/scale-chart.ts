/** Renders bench/scale.json as a small self-contained SVG: idle CPU per node and cold one-token generate against mesh size. */
export interface ScaleRow {
  nodes: number
  idle?: { cpuPercentPerNode: number, rssMiBPerNode: number }
  generate?: { medianElapsedMs: number | null, medianWallMs: number | null }
  status?: { wallMs: number }
}

export function renderScaleChart (rows: ScaleRow[], machine: string): string {
  const W = 760; const H = 420; const L = 70; const R = 80; const T = 50; const B = 60
  const xs = rows.map(r => r.nodes)
  const lo = Math.log10(Math.min(...xs)); const hi = Math.log10(Math.max(...xs))
  const x = (n: number): number => L + (hi === lo ? 0.5 : (Math.log10(n) - lo) / (hi - lo)) * (W - L - R)
  const cpuMax = Math.max(0.5, ...rows.map(r => r.idle?.cpuPercentPerNode ?? 0)) * 1.15
  const msMax = Math.max(100, ...rows.map(r => r.generate?.medianElapsedMs ?? 0)) * 1.15
  const yCpu = (v: number): number => T + (1 - v / cpuMax) * (H - T - B)
  const yMs = (v: number): number => T + (1 - v / msMax) * (H - T - B)
  const p: string[] = []
  p.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`)
  p.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  p.push(`<text x="${L}" y="20" font-size="14">meshllm scale: idle CPU per node and cold one-token generate vs mesh size</text>`)
  p.push(`<text x="${L}" y="36" fill="#666">${machine}; every node a complete peer (bench/scale.ts)</text>`)
  for (const n of xs) p.push(`<line x1="${x(n)}" x2="${x(n)}" y1="${T}" y2="${H - B}" stroke="#eee"/><text x="${x(n)}" y="${H - B + 16}" text-anchor="middle">${n}</text>`)
  p.push(`<text x="${(L + W - R) / 2}" y="${H - 20}" text-anchor="middle">nodes in the mesh (log scale)</text>`)
  // goal line: 0.3 % of a core per idle node
  p.push(`<line x1="${L}" x2="${W - R}" y1="${yCpu(0.3)}" y2="${yCpu(0.3)}" stroke="#1b9e77" stroke-dasharray="4 4"/><text x="${W - R - 4}" y="${yCpu(0.3) - 4}" text-anchor="end" fill="#1b9e77">goal 0.3 %</text>`)
  for (let i = 0; i <= 4; i++) {
    const v = cpuMax * i / 4; const m = msMax * i / 4
    p.push(`<text x="${L - 6}" y="${yCpu(v) + 4}" text-anchor="end" fill="#1b9e77">${v.toFixed(2)}</text>`)
    p.push(`<text x="${W - R + 6}" y="${yMs(m) + 4}" fill="#d95f02">${Math.round(m)}</text>`)
  }
  p.push(`<text x="14" y="${(T + H - B) / 2}" fill="#1b9e77" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">idle CPU per node (% of a core)</text>`)
  p.push(`<text x="${W - 14}" y="${(T + H - B) / 2}" fill="#d95f02" transform="rotate(90 ${W - 14} ${(T + H - B) / 2})" text-anchor="middle">cold generate, router's ms</text>`)
  const line = (pts: Array<[number, number]>, color: string): void => {
    if (pts.length === 0) return
    p.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}"/>`)
    for (const [a, b] of pts) p.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3" fill="${color}"/>`)
  }
  line(rows.filter(r => r.idle != null).map(r => [x(r.nodes), yCpu(r.idle?.cpuPercentPerNode ?? 0)]), '#1b9e77')
  line(rows.filter(r => r.generate?.medianElapsedMs != null).map(r => [x(r.nodes), yMs(r.generate?.medianElapsedMs ?? 0)]), '#d95f02')
  p.push('</svg>')
  return p.join('\n') + '\n'
}
