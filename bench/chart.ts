/** Renders bench results as a small self-contained SVG: tokens/s against K, one line per latency. */
interface Run { latencyMs: number, k: number, speculative: boolean, temperature: number, medianTokensPerSecond: number, pingRttMs: number, pipelined?: boolean }

export function renderChart (runs: Run[], computeMsPerToken: number, machine: string): string {
  const W = 760; const H = 440; const L = 70; const R = 200; const T = 40; const B = 60
  const ks = [...new Set(runs.map(r => r.k))].sort((a, b) => a - b)
  const lats = [...new Set(runs.map(r => r.latencyMs))].sort((a, b) => a - b)
  const maxY = Math.max(1, ...runs.map(r => r.medianTokensPerSecond)) * 1.1
  const x = (k: number): number => L + (ks.indexOf(k) / Math.max(1, ks.length - 1)) * (W - L - R)
  const yLog = (v: number): number => {
    const lo = Math.log10(0.5); const hi = Math.log10(maxY)
    return T + (1 - (Math.log10(Math.max(0.5, v)) - lo) / (hi - lo)) * (H - T - B)
  }
  const colors = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e']
  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`)
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  parts.push(`<text x="${L}" y="20" font-size="14">meshllm: tokens/s vs K and one-way latency (log scale)</text>`)
  for (const v of [0.5, 1, 2, 5, 10, 20, 50, 100, 200]) {
    if (v > maxY) break
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${yLog(v)}" y2="${yLog(v)}" stroke="#eee"/><text x="${L - 8}" y="${yLog(v) + 4}" text-anchor="end">${v}</text>`)
  }
  for (const k of ks) parts.push(`<text x="${x(k)}" y="${H - B + 18}" text-anchor="middle">K=${k}</text>`)
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 15}" text-anchor="middle">experts per token (K)</text>`)
  lats.forEach((lat, i) => {
    const c = colors[i % colors.length]
    for (const spec of [false, true]) {
      // speculative line: greedy speculation (T = 0, identical output to the solid line)
      const pts = runs.filter(r => r.latencyMs === lat && r.speculative === spec && r.temperature === 0 && r.pipelined !== false).sort((a, b) => a.k - b.k)
      if (pts.length === 0) continue
      parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" ${spec ? 'stroke-dasharray="2 3"' : ''} points="${pts.map(p => `${x(p.k)},${yLog(p.medianTokensPerSecond)}`).join(' ')}"/>`)
      for (const p of pts) parts.push(`<circle cx="${x(p.k)}" cy="${yLog(p.medianTokensPerSecond)}" r="3" fill="${c}"/>`)
    }
    // ceiling of a one-round-trip-per-token design: 1 / (RTT + compute), compute(K) being the
    // per-token time of the same K without latency (falls back to the K=1 figure)
    const rtt = runs.find(r => r.latencyMs === lat)?.pingRttMs ?? 2 * lat
    const ceil = ks.map(k => ({ k, v: 1000 / (rtt + ceilingComputeMs(runs, k, computeMsPerToken)) }))
    // (at 0 ms added latency the measured compute already contains the loopback round trip)
    if (lat > 0) parts.push(`<polyline fill="none" stroke="${c}" stroke-dasharray="8 4" opacity="0.6" points="${ceil.map(p => `${x(p.k)},${yLog(p.v)}`).join(' ')}"/>`)
    parts.push(`<text x="${W - R + 10}" y="${T + 20 + i * 36}" fill="${c}">${lat} ms one way</text>`)
    if (lat > 0) parts.push(`<text x="${W - R + 10}" y="${T + 34 + i * 36}" fill="${c}" font-size="10">ceiling 1/(RTT+compute) ${ceil[0].v.toFixed(1)}–${ceil[ceil.length - 1].v.toFixed(1)}</text>`)
  })
  parts.push(`<text x="${W - R + 10}" y="${H - B - 30}" font-size="10">solid: token by token</text>`)
  parts.push(`<text x="${W - R + 10}" y="${H - B - 16}" font-size="10">dotted: speculative (T=0) · dashed: ceiling</text>`)
  parts.push(`<text x="${L}" y="${H - 2}" font-size="9" fill="#666">${machine.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`)
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/** per-token compute time of K experts without added latency (token by token, latency 0) */
export function ceilingComputeMs (runs: Run[], k: number, fallbackMs: number): number {
  const r = runs.find(x => x.latencyMs === 0 && x.k === k && !x.speculative)
  return r != null ? 1000 / r.medianTokensPerSecond : fallbackMs
}
