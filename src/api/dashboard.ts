/**
 * The dashboard: one self-contained page (no external resources: meshes run offline) served
 * at / and /dashboard. Live data from GET /api/events (server-sent events read with fetch, so
 * a bearer token can be sent), generation through POST /v1/completions with stream: true.
 * With an API token the page asks for it once (kept in localStorage, or `#token=…`).
 */
import { GENERATE_DEFAULTS, GENERATE_LIMITS } from '../router/options.js'

// the input bounds are the generation-options schema's (src/router/options.ts)
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshllm dashboard</title>
<style>
  :root { --bg:#0f1420; --panel:#171e2e; --line:#2a3550; --text:#dde4f0; --dim:#8a97b0; --ok:#3ecf8e; --warn:#f5b942; --bad:#ef5b5b; --unk:#7d8aa5; --accent:#5aa9ff; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--text); font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { display:flex; align-items:center; gap:16px; padding:12px 20px; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; letter-spacing:.5px; }
  header .peer { color:var(--dim); font-family:ui-monospace, Menlo, monospace; font-size:12px; }
  .badge { padding:3px 10px; border-radius:12px; font-weight:600; font-size:12px; }
  .badge.ok { background:rgba(62,207,142,.15); color:var(--ok); }
  .badge.halted { background:rgba(239,91,91,.2); color:var(--bad); }
  main { display:grid; grid-template-columns: minmax(0, 3fr) minmax(280px, 2fr); gap:16px; padding:16px 20px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
  section h2 { font-size:13px; text-transform:uppercase; letter-spacing:1px; color:var(--dim); margin:0 0 8px; font-weight:600; }
  #graph { width:100%; height:360px; display:block; }
  #graph .edge { stroke:var(--line); stroke-width:1.5; transition: stroke .4s, stroke-width .4s; }
  #graph .edge.active { stroke:var(--accent); stroke-width:4; }
  #graph .expert circle.body { stroke:#0008; stroke-width:2; transition: r .4s; }
  #graph .expert.active circle.body { stroke:var(--accent); stroke-width:4; }
  #graph .expert text, #graph .router text { fill:var(--text); font-size:12px; text-anchor:middle; }
  #graph .expert text.sub, #graph .router text.sub { fill:var(--dim); font-size:10px; }
  #graph .router circle { fill:#26324d; stroke:var(--accent); stroke-width:2; }
  #graph .load { fill:none; stroke:var(--warn); stroke-width:4; }
  .legend { display:flex; gap:14px; color:var(--dim); font-size:12px; flex-wrap:wrap; }
  .dot { display:inline-block; width:10px; height:10px; border-radius:50%; margin-right:4px; vertical-align:-1px; }
  table { width:100%; border-collapse:collapse; font-size:12px; }
  th, td { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; }
  td.mono { font-family:ui-monospace, Menlo, monospace; }
  #chart { width:100%; height:150px; display:block; }
  .kv { display:grid; grid-template-columns:auto 1fr; gap:2px 12px; font-size:13px; }
  .kv div:nth-child(odd) { color:var(--dim); }
  #gov-log { list-style:none; margin:8px 0 0; padding:0; max-height:170px; overflow:auto; font-size:12px; }
  #gov-log li { padding:3px 0; border-bottom:1px dashed var(--line); }
  #gov-log .rej { color:var(--bad); }
  #gov-log .acc { color:var(--ok); }
  .gen { grid-column: 1 / -1; }
  #tasks td:last-child { white-space:normal; }
  .row { display:flex; gap:8px; flex-wrap:wrap; align-items:center; }
  textarea, input, select, button { background:#0c111b; color:var(--text); border:1px solid var(--line); border-radius:6px; padding:6px 8px; font:inherit; }
  textarea { width:100%; min-height:56px; resize:vertical; }
  input.small { width:70px; }
  button { background:var(--accent); color:#04101f; border:none; font-weight:600; cursor:pointer; padding:7px 16px; }
  button:disabled { opacity:.5; cursor:default; }
  #output { white-space:pre-wrap; background:#0c111b; border:1px solid var(--line); border-radius:6px; padding:10px; min-height:70px; margin:8px 0 4px; font-family:ui-monospace, Menlo, monospace; font-size:13px; }
  #output .prompt { color:var(--dim); }
  #gen-stats { color:var(--dim); font-size:12px; }
  #gen-error, #auth-error { color:var(--bad); font-size:13px; }
  #auth { display:none; padding:10px 20px; background:#2a1f10; border-bottom:1px solid var(--warn); }
  @media (max-width: 900px) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>meshllm</h1>
  <span class="peer" id="peer">connecting…</span>
  <span class="badge ok" id="halt-badge">serving</span>
  <span class="peer" id="updated"></span>
</header>
<div id="auth">
  This node requires an API token.
  <input id="token" type="password" placeholder="token" autocomplete="off">
  <button id="token-save">Use token</button>
  <span id="auth-error"></span>
</div>
<main>
  <section>
    <h2>Mesh</h2>
    <svg id="graph" viewBox="0 0 640 360" role="img" aria-label="experts of the mesh"></svg>
    <div class="legend">
      <span><span class="dot" style="background:var(--ok)"></span>healthy</span>
      <span><span class="dot" style="background:var(--warn)"></span>degraded</span>
      <span><span class="dot" style="background:var(--bad)"></span>circuit open</span>
      <span><span class="dot" style="background:var(--unk)"></span>not used yet</span>
      <span><span class="dot" style="background:var(--accent)"></span>served the last tokens</span>
      <span>ring: sessions in use · size: tokens/s</span>
    </div>
    <table id="experts">
      <thead><tr><th>model</th><th>peer</th><th>tokens/s</th><th>health</th><th>latency</th><th>slots</th><th>ctx</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Governance</h2>
    <div class="kv" id="gov"></div>
    <ul id="gov-log"></ul>
    <h2 style="margin-top:14px">Tokens per second (last 2 minutes)</h2>
    <canvas id="chart" width="600" height="150"></canvas>
    <div class="kv" id="stats" style="margin-top:6px"></div>
  </section>
  <section class="gen">
    <h2>Generate</h2>
    <textarea id="prompt" placeholder="Prompt…">The kernel</textarea>
    <div class="row">
      <label>model <select id="model"><option value="meshllm">meshllm (whole mesh)</option></select></label>
      <label>K <input id="k" class="small" type="number" min="${GENERATE_LIMITS.k[0]}" max="${GENERATE_LIMITS.k[1]}" value="2"></label>
      <label>max tokens <input id="max-tokens" class="small" type="number" min="1" value="48"></label>
      <label>temperature <input id="temperature" class="small" type="number" min="${GENERATE_LIMITS.temperature[0]}" max="${GENERATE_LIMITS.temperature[1]}" step="0.1" value="${GENERATE_DEFAULTS.temperature}"></label>
      <button id="generate">Generate</button>
      <button id="stop" disabled>Stop</button>
      <span id="gen-error"></span>
    </div>
    <div id="output"></div>
    <div id="gen-stats"></div>
  </section>
  <section class="gen">
    <h2>Tasks <span id="tasks-total" style="text-transform:none; letter-spacing:0"></span></h2>
    <table id="tasks">
      <thead><tr><th>created</th><th>by</th><th>state</th><th>approval</th><th>tier</th><th>action</th><th>task</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
<script>
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var hashToken = (location.hash.match(/token=([^&]+)/) || [])[1];
  var token = hashToken ? decodeURIComponent(hashToken) : (localStorage.getItem('meshllm-token') || '');
  var snapshot = null;
  var active = new Map();        // expert peer id -> time it last served a token
  var perSecond = new Map();     // second -> tokens (live, merged with the server's series)
  var genCtrl = null;

  function headers(extra) {
    var h = extra || {};
    if (token) h.authorization = 'Bearer ' + token;
    return h;
  }
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]; }); }
  function short(id) { return id ? id.slice(0, 4) + '…' + id.slice(-6) : ''; }
  function fmt(n, d) { return (n == null || !isFinite(n)) ? '–' : Number(n).toFixed(d == null ? 1 : d); }
  function needAuth(msg) { $('auth').style.display = 'block'; $('auth-error').textContent = msg || ''; }

  $('token-save').onclick = function () {
    token = $('token').value.trim();
    localStorage.setItem('meshllm-token', token);
    $('auth').style.display = 'none';
    connect();
  };

  // server-sent events over fetch (EventSource cannot send an Authorization header)
  async function readSse(resp, onEvent) {
    var reader = resp.body.getReader();
    var dec = new TextDecoder();
    var buf = '';
    for (;;) {
      var r = await reader.read();
      if (r.done) break;
      buf += dec.decode(r.value, { stream: true });
      var i;
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        var block = buf.slice(0, i); buf = buf.slice(i + 2);
        var ev = 'message', data = [];
        block.split('\\n').forEach(function (line) {
          if (line.indexOf('event:') === 0) ev = line.slice(6).trim();
          else if (line.indexOf('data:') === 0) data.push(line.slice(5).replace(/^ /, ''));
        });
        if (data.length) onEvent(ev, data.join('\\n'));
      }
    }
  }

  var connecting = false;
  async function connect() {
    if (connecting) return;
    connecting = true;
    try {
      var resp = await fetch('/api/events', { headers: headers() });
      if (resp.status === 401) { needAuth('token required or wrong'); return; }
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      await readSse(resp, function (ev, data) {
        var d = JSON.parse(data);
        if (ev === 'snapshot') { snapshot = d; render(); }
        else if (ev === 'token') {
          var now = Date.now();
          (d.experts || []).forEach(function (id) { active.set(id, now); });
          $('graph').setAttribute('data-last-served', (d.experts || []).join(','));
          var s = Math.floor(now / 1000); perSecond.set(s, (perSecond.get(s) || 0) + 1);
          renderActive();
        } else if (ev === 'governance') { /* a snapshot follows */ }
      });
    } catch (e) {
      $('updated').textContent = 'disconnected: ' + e.message;
    } finally {
      connecting = false;
    }
    setTimeout(connect, 2000);
  }

  function healthColor(state) {
    return state === 'healthy' ? 'var(--ok)' : state === 'degraded' ? 'var(--warn)' : state === 'circuit_open' ? 'var(--bad)' : 'var(--unk)';
  }

  function render() {
    var st = snapshot.status;
    $('peer').textContent = 'node ' + short(st.peerId) + ' · ' + st.expertsOnline + ' expert(s) online';
    $('updated').textContent = 'updated ' + new Date(snapshot.at).toLocaleTimeString();
    var halted = st.halt && st.halt.halted;
    var b = $('halt-badge');
    b.className = 'badge ' + (halted ? 'halted' : 'ok');
    b.textContent = halted ? 'HALTED: ' + st.halt.reason : 'serving';
    renderGraph(st);
    renderTable(st);
    renderGov(snapshot.governance);
    renderTasks(snapshot.tasks);
    renderStats(st);
    renderModels(st);
    drawChart();
  }

  function renderGraph(st) {
    var svg = $('graph');
    var W = 640, H = 360, cx = W / 2, cy = H / 2, R = 130;
    var experts = st.experts.slice();
    if (st.localExpert) experts.push(st.localExpert);
    var html = '';
    var pos = experts.map(function (e, i) {
      var a = -Math.PI / 2 + 2 * Math.PI * i / Math.max(1, experts.length);
      return { x: cx + R * 1.7 * Math.cos(a), y: cy + R * Math.sin(a) };
    });
    experts.forEach(function (e, i) {
      html += '<line class="edge" data-peer="' + esc(e.peerId) + '" x1="' + cx + '" y1="' + cy + '" x2="' + pos[i].x.toFixed(1) + '" y2="' + pos[i].y.toFixed(1) + '"></line>';
    });
    html += '<g class="router"><circle cx="' + cx + '" cy="' + cy + '" r="26"></circle><text x="' + cx + '" y="' + (cy + 4) + '">router</text><text class="sub" x="' + cx + '" y="' + (cy + 42) + '">this node</text></g>';
    experts.forEach(function (e, i) {
      var p = pos[i];
      var r = 16 + Math.min(14, Math.sqrt(Math.max(0, e.tokensPerSecond)) * 1.2);
      var used = e.maxSlots > 0 ? (e.maxSlots - e.freeSlots) / e.maxSlots : 0;
      var circ = 2 * Math.PI * (r + 5);
      var state = e.local ? 'healthy' : e.health.state;
      html += '<g class="expert" data-peer="' + esc(e.peerId) + '" data-model="' + esc(e.model) + '" data-health="' + esc(state) + '">' +
        '<title>' + esc(e.model + ' ' + e.peerId + '\\n' + fmt(e.tokensPerSecond) + ' tokens/s advertised, health ' + e.health.state + ', latency ' + fmt(e.health.latencyMs) + ' ms, slots ' + e.freeSlots + '/' + e.maxSlots + ' free' + (e.local ? ' (served by this node)' : '')) + '</title>' +
        '<circle class="body" cx="' + p.x.toFixed(1) + '" cy="' + p.y.toFixed(1) + '" r="' + r.toFixed(1) + '" fill="' + healthColor(state) + '"></circle>' +
        '<circle class="load" cx="' + p.x.toFixed(1) + '" cy="' + p.y.toFixed(1) + '" r="' + (r + 5).toFixed(1) + '" stroke-dasharray="' + (circ * used).toFixed(1) + ' ' + circ.toFixed(1) + '" transform="rotate(-90 ' + p.x.toFixed(1) + ' ' + p.y.toFixed(1) + ')"></circle>' +
        '<text x="' + p.x.toFixed(1) + '" y="' + (p.y + r + 18).toFixed(1) + '">' + esc(e.model) + (e.local ? ' (local)' : '') + '</text>' +
        '<text class="sub" x="' + p.x.toFixed(1) + '" y="' + (p.y + r + 31).toFixed(1) + '">' + esc(short(e.peerId)) + ' · ' + fmt(e.tokensPerSecond, 0) + ' t/s</text>' +
        '</g>';
    });
    if (experts.length === 0) html += '<text x="' + cx + '" y="' + (cy + 80) + '" fill="#8a97b0" text-anchor="middle">no experts found yet</text>';
    svg.innerHTML = html;
    renderActive();
  }

  function renderActive() {
    var now = Date.now();
    document.querySelectorAll('#graph [data-peer]').forEach(function (el) {
      var t = active.get(el.getAttribute('data-peer'));
      el.classList.toggle('active', t != null && now - t < 1500);
    });
  }
  setInterval(renderActive, 500);

  function renderTable(st) {
    var rows = st.experts.map(function (e) {
      return '<tr data-peer="' + esc(e.peerId) + '"><td>' + esc(e.model) + '</td><td class="mono">' + esc(short(e.peerId)) + '</td><td>' + fmt(e.tokensPerSecond) +
        '</td><td><span class="dot" style="background:' + healthColor(e.health.state) + '"></span>' + esc(e.health.state) + (e.health.failures ? ' (' + e.health.failures + ' failed)' : '') +
        '</td><td>' + (e.health.samples ? fmt(e.health.latencyMs) + ' ms' : '–') + '</td><td>' + e.freeSlots + '/' + e.maxSlots + '</td><td>' + e.contextLength + '</td></tr>';
    });
    if (st.localExpert) {
      var l = st.localExpert;
      rows.push('<tr><td>' + esc(l.model) + ' (local)</td><td class="mono">' + esc(short(l.peerId)) + '</td><td>' + fmt(l.tokensPerSecond) + '</td><td>serving</td><td>–</td><td>' + l.freeSlots + '/' + l.maxSlots + '</td><td>' + l.contextLength + '</td></tr>');
    }
    document.querySelector('#experts tbody').innerHTML = rows.join('');
  }

  function renderGov(g) {
    var halted = g.halt && g.halt.halted;
    $('gov').innerHTML =
      '<div>state</div><div style="color:' + (halted ? 'var(--bad)' : 'var(--ok)') + '">' + (halted ? 'HALTED: ' + esc(g.halt.reason) : g.readOnly ? 'read-only (after resume)' : 'running') + '</div>' +
      '<div>mesh</div><div>' + esc(g.meshId) + '</div>' +
      '<div>phase</div><div>' + g.phase + ' · ' + esc(g.phaseName || '') + '</div>' +
      '<div>version</div><div>' + g.version + '</div>' +
      '<div>keyholders</div><div>' + (g.keyholders ? g.keyholders.length : 0) + (g.thresholds ? ' (halt ' + g.thresholds.halt + ', resume ' + g.thresholds.resume + ')' : '') + '</div>';
    $('gov-log').innerHTML = (g.recent || []).map(function (e) {
      return '<li><span class="' + (e.accepted ? 'acc' : 'rej') + '">' + (e.accepted ? '✓' : '✗') + ' ' + esc(e.kind) + '</span> v' + e.version + ' · ' + esc(e.detail) + ' <span style="color:var(--dim)">(' + esc(e.via) + ', ' + new Date(e.atMs).toLocaleTimeString() + ')</span></li>';
    }).join('') || '<li style="color:var(--dim)">no governance messages yet</li>';
  }

  // the node's task table: the agent's tasks and those submitted through the API (newest first)
  function renderTasks(t) {
    if (!t) return;
    $('tasks-total').textContent = '(' + t.total + ')';
    document.querySelector('#tasks tbody').innerHTML = t.latest.map(function (x) {
      return '<tr data-task="' + esc(x.id) + '" data-origin="' + esc(x.origin) + '"><td>' + new Date(x.createdAtMs).toLocaleTimeString() + '</td><td>' + esc(x.origin === 'agent' ? 'agent (' + x.source + ')' : 'api' + (x.source ? ' (' + x.source + ')' : '')) +
        '</td><td>' + esc(x.state) + '</td><td>' + esc(x.approval) + '</td><td>' + esc(x.tierName) + '</td><td>' + esc(x.type) + '</td><td>' + esc((x.domain ? x.domain + ': ' : '') + x.title) + '</td></tr>';
    }).join('') || '<tr><td colspan="7" style="color:var(--dim)">no tasks yet</td></tr>';
  }

  function renderStats(st) {
    var s = st.stats;
    $('stats').innerHTML =
      '<div>K (default)</div><div>' + st.policy.defaultK + ' · ' + esc(st.policy.defaultRule) + '</div>' +
      '<div>last generation</div><div>' + fmt(s.lastTokensPerSecond) + ' tokens/s</div>' +
      '<div>recent (60 s)</div><div>' + fmt(s.recentTokensPerSecond) + ' tokens/s</div>' +
      '<div>bytes / expert / token</div><div>' + fmt(s.bytesPerExpertToken, 0) + '</div>' +
      '<div>tokens routed</div><div>' + s.tokens + ' in ' + s.generations + ' generation(s)</div>';
  }

  function renderModels(st) {
    var sel = $('model');
    var names = ['meshllm'];
    st.experts.forEach(function (e) { if (names.indexOf(e.model) < 0) names.push(e.model); });
    var have = Array.prototype.map.call(sel.options, function (o) { return o.value; });
    if (have.join() === names.join()) return;
    var cur = sel.value;
    sel.innerHTML = names.map(function (n) { return '<option value="' + esc(n) + '">' + esc(n === 'meshllm' ? 'meshllm (whole mesh)' : n) + '</option>'; }).join('');
    if (names.indexOf(cur) >= 0) sel.value = cur;
  }

  function drawChart() {
    var c = $('chart'), ctx = c.getContext('2d');
    var w = c.width = c.clientWidth * (window.devicePixelRatio || 1), h = c.height = 150 * (window.devicePixelRatio || 1);
    var series = new Map();
    if (snapshot) snapshot.throughput.forEach(function (p) { series.set(Math.floor(p[0] / 1000), p[1]); });
    perSecond.forEach(function (v, k) { series.set(k, Math.max(series.get(k) || 0, v)); });
    var now = Math.floor(Date.now() / 1000);
    var pts = [];
    for (var s = now - 119; s <= now; s++) pts.push(series.get(s) || 0);
    perSecond.forEach(function (v, k) { if (k < now - 130) perSecond.delete(k); });
    var max = Math.max(5, Math.max.apply(null, pts));
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = '#2a3550'; ctx.lineWidth = 1;
    ctx.fillStyle = '#8a97b0'; ctx.font = (11 * (window.devicePixelRatio || 1)) + 'px system-ui';
    for (var g = 0; g <= 2; g++) { var y = h - 14 - (h - 28) * g / 2; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke(); ctx.fillText(String(Math.round(max * g / 2)), 4, y - 3); }
    ctx.strokeStyle = '#5aa9ff'; ctx.lineWidth = 2 * (window.devicePixelRatio || 1); ctx.beginPath();
    pts.forEach(function (v, i) { var x = w * i / (pts.length - 1), y = h - 14 - (h - 28) * v / max; if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    ctx.stroke();
    ctx.fillStyle = 'rgba(90,169,255,.12)'; ctx.lineTo(w, h - 14); ctx.lineTo(0, h - 14); ctx.fill();
  }
  setInterval(drawChart, 1000);

  $('generate').onclick = async function () {
    $('gen-error').textContent = '';
    $('gen-stats').textContent = '';
    var out = $('output');
    var prompt = $('prompt').value;
    out.innerHTML = '<span class="prompt">' + esc(prompt) + '</span><span id="completion"></span>';
    var comp = $('completion');
    $('generate').disabled = true; $('stop').disabled = false;
    genCtrl = new AbortController();
    var t0 = performance.now(), n = 0;
    try {
      var body = { model: $('model').value, prompt: prompt, max_tokens: Number($('max-tokens').value), temperature: Number($('temperature').value), k: Number($('k').value), stream: true, stream_options: { include_usage: true } };
      var resp = await fetch('/v1/completions', { method: 'POST', headers: headers({ 'content-type': 'application/json' }), body: JSON.stringify(body), signal: genCtrl.signal });
      if (!resp.ok) {
        var err = await resp.json().catch(function () { return {}; });
        if (resp.status === 401) needAuth('token required or wrong');
        throw new Error((err.error && err.error.message) || ('HTTP ' + resp.status));
      }
      await readSse(resp, function (ev, data) {
        if (data === '[DONE]') { out.setAttribute('data-done', '1'); return; }
        var d = JSON.parse(data);
        if (d.error) throw new Error(d.error.message);
        if (d.choices && d.choices.length && d.choices[0].text) { comp.textContent += d.choices[0].text; n++; }
        if (d.usage) {
          var m = d.meshllm || {};
          $('gen-stats').textContent = d.usage.completion_tokens + ' tokens in ' + fmt((performance.now() - t0) / 1000, 2) + ' s · ' + fmt(m.tokens_per_second) + ' tokens/s · K=' + m.effective_k + ' · ' + (m.experts || []).length + ' expert(s) · ' + fmt(m.bytes_per_expert_token, 0) + ' bytes/expert/token';
        }
      });
    } catch (e) {
      if (e.name !== 'AbortError') $('gen-error').textContent = e.message;
    } finally {
      $('generate').disabled = false; $('stop').disabled = true; genCtrl = null;
    }
  };
  $('stop').onclick = function () { if (genCtrl) genCtrl.abort(); };

  connect();
})();
</script>
</body>
</html>
`
