// gatewatch dashboard. Plain ES module, no build step.
//
// Rule of this file: every string that came from the server is attacker-controlled (paths,
// queries, user agents, client ids…) and reaches the page only as a DOM text node or a
// property such as `title`/`value`. Nothing here assigns markup (`innerHTML`,
// `insertAdjacentHTML`, `document.write`); the server's Trusted Types policy would make any
// such assignment throw.

const main = document.getElementById('main');
const live = document.getElementById('live');

const OWASP = [
  ['API1:2023', 'Broken Object Level Authorization'],
  ['API2:2023', 'Broken Authentication'],
  ['API3:2023', 'Broken Object Property Level Authorization'],
  ['API4:2023', 'Unrestricted Resource Consumption'],
  ['API5:2023', 'Broken Function Level Authorization'],
  ['API6:2023', 'Unrestricted Access to Sensitive Business Flows'],
  ['API7:2023', 'Server Side Request Forgery'],
  ['API8:2023', 'Security Misconfiguration'],
  ['API9:2023', 'Improper Inventory Management'],
  ['API10:2023', 'Unsafe Consumption of APIs'],
];
const SEVERITIES = ['critical', 'high', 'medium', 'low'];

// ---------------------------------------------------------------------------------------
// DOM helpers: the only way this file builds elements.

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = String(v);
      else e[k] = v; // DOM properties (title, value, type, href…), never markup
    }
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return parent;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

/** Text that wraps anywhere but scrolls past a few lines, so one huge value cannot make a
 *  row as tall as the screen. */
function long(text) {
  return el('div', { class: 'long', text: String(text ?? '') });
}

/** A cell that clips long text with an ellipsis and shows the whole of it on hover. */
function clipCell(text, cls = '') {
  const s = String(text ?? '');
  return el('td', { class: `clip ${cls}`, title: s }, s);
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? '–' : d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}
function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits });
}
function fmtPct(x) {
  return x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)} %`;
}
function sevBadge(sev) {
  const s = SEVERITIES.includes(sev) ? sev : 'low';
  return el('span', { class: `badge sev-${s}`, text: s });
}
function statusText(s) {
  return String(s).replace('_', ' ');
}

let toastTimer;
function toast(msg) {
  document.querySelector('.toast')?.remove();
  const t = el('div', { class: 'toast', role: 'status', text: msg });
  document.body.append(t);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.remove(), 4000);
}

// ---------------------------------------------------------------------------------------
// API

class HttpError extends Error {}

async function api(path, { method = 'GET', body } = {}) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.headers['X-Gatewatch-Request'] = '1';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.assign('/login');
    throw new HttpError('authentication required');
  }
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) throw new HttpError((data && data.error) || `HTTP ${r.status}`);
  return data;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

// ---------------------------------------------------------------------------------------
// Charts (uPlot)

const charts = new Set();
function chart(container, opts, data) {
  const width = Math.max(200, container.clientWidth || 600);
  const u = new uPlot({ width, height: opts.height ?? 220, ...opts }, data, container);
  charts.add(u);
  return u;
}
function disposeCharts() {
  for (const u of charts) u.destroy();
  charts.clear();
}
window.addEventListener('resize', () => {
  for (const u of charts) {
    const w = u.root.parentElement?.clientWidth;
    if (w) u.setSize({ width: Math.max(200, w), height: u.height });
  }
});
const secs = (pts) => pts.map((p) => p.ts_ms / 1000);

// ---------------------------------------------------------------------------------------
// Router and live updates

let meta = { poll_ms: 2000, auth: false };
let view = null; // { refresh(changes) }
let lastVersion = -1;

function route() {
  disposeCharts();
  const hash = location.hash || '#/queue';
  const [, name = 'queue', ...rest] = hash.split('/');
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === name || (name === 'incident' && a.dataset.nav === 'queue'));
  }
  clear(main);
  lastVersion = -1;
  if (name === 'incident') view = incidentView(decodeURIComponent(rest.join('/')));
  else if (name === 'overview') view = overviewView();
  else if (name === 'inventory') view = inventoryView();
  else if (name === 'suppressions') view = suppressionsView();
  else view = queueView();
  poll();
}

let pollTimer;
let polls = 0;
async function poll() {
  clearTimeout(pollTimer);
  try {
    const ch = await api('/api/changes');
    live.className = 'live ok';
    live.textContent = `live · ${fmtNum(ch.active)} open · ${new Date().toLocaleTimeString('en-GB')}`;
    const moved = ch.version !== lastVersion;
    lastVersion = ch.version;
    polls += 1;
    if (view && (moved || (view.periodic && polls % view.periodic === 0))) await view.refresh(ch);
  } catch (e) {
    live.className = 'live bad';
    live.textContent = `disconnected: ${e.message}`;
  }
  pollTimer = setTimeout(poll, meta.poll_ms);
}

// ---------------------------------------------------------------------------------------
// Alert queue

const queueFilters = { status: 'active', min_severity: '', category: '', entity: '', endpoint: '' };

function queueView() {
  const count = el('span', { class: 'muted', id: 'queue-count' });
  const body = el('tbody', { id: 'queue-body' });
  const f = queueFilters;
  let seq = 0;
  const refresh = async () => {
    // Polls and filter edits overlap; only the latest request may draw.
    const mine = ++seq;
    const query = qs({ ...f, limit: 500 });
    const page = await api('/api/incidents' + query);
    if (mine !== seq) return;
    body.dataset.query = query;
    count.textContent = `${fmtNum(page.incidents.length)} shown of ${fmtNum(page.total)}`;
    clear(body);
    if (!page.incidents.length) body.append(el('tr', null, el('td', { colSpan: 9, class: 'empty', text: 'No incidents match.' })));
    for (const i of page.incidents) body.append(queueRow(i, refresh));
  };
  const input = (name, label, placeholder) => el('label', null, label,
    el('input', { type: 'search', name, value: f[name], placeholder, maxLength: 256,
      oninput: debounce((e) => { f[name] = e.target.value.trim(); refresh(); }, 250) }));
  const select = (name, label, options) => el('label', null, label,
    el('select', { name, onchange: (e) => { f[name] = e.target.value; refresh(); } },
      options.map(([v, t]) => el('option', { value: v, selected: f[name] === v, text: t }))));
  main.append(
    el('h1', null, 'Alert queue ', count),
    el('form', { class: 'filters', id: 'queue-filters', onsubmit: (e) => e.preventDefault() },
      select('status', 'Status', [['active', 'Open + acknowledged'], ['open', 'Open'], ['acknowledged', 'Acknowledged'],
        ['resolved', 'Resolved'], ['false_positive', 'False positive'], ['all', 'All']]),
      select('min_severity', 'Severity at least', [['', 'any'], ...SEVERITIES.map((s) => [s, s])]),
      select('category', 'OWASP category', [['', 'any'], ...OWASP.map(([c, n]) => [c, `${c} ${n}`])]),
      input('entity', 'Entity', 'client id or address'),
      input('endpoint', 'Endpoint', 'e.g. /orders')),
    el('div', { class: 'card table-wrap' },
      el('table', { id: 'queue' },
        el('colgroup', null, ...[5, 7, 21, 15, 16, 8, 5, 10, 13].map((w) => el('col', { width: `${w}%` }))),
        el('thead', null, el('tr', null, ['Risk', 'Severity', 'Incident', 'Entity', 'Endpoint', 'Category', 'Alerts', 'Last seen', 'Triage']
          .map((h, i) => el('th', { class: i === 0 || i === 6 ? 'num' : '', text: h })))),
        body)));
  return { refresh };
}

function queueRow(i, refresh) {
  const open = () => { location.hash = `#/incident/${encodeURIComponent(i.id)}`; };
  const act = (label, path, cls, enabled) => el('button', {
    type: 'button', class: cls, disabled: !enabled, text: label, dataset: { action: path },
    onclick: async (e) => {
      e.stopPropagation();
      try {
        const out = await triage(i.id, path, {});
        if (out.suppression) toast(`Suppression ${out.suppression.id} created`);
        await refresh();
      } catch (err) { toast(`Failed: ${err.message}`); }
    },
  });
  return el('tr', { class: 'row', dataset: { id: i.id }, onclick: open },
    el('td', { class: 'num risk', text: fmtNum(i.risk) }),
    el('td', null, sevBadge(i.severity)),
    el('td', null, el('a', { class: 'clip-line', title: i.title, href: `#/incident/${encodeURIComponent(i.id)}`, text: i.title }),
      el('div', { class: 'status', text: statusText(i.status) })),
    clipCell(i.entity, 'mono entity'),
    clipCell(i.endpoint, 'mono'),
    el('td', { title: i.category_name, text: i.category }),
    el('td', { class: 'num', text: fmtNum(i.alert_count) }),
    el('td', { text: fmtTime(i.last_seen_ms) }),
    el('td', { class: 'actions' },
      act('Ack', 'ack', 'secondary', i.status === 'open'),
      act('Resolve', 'resolve', 'secondary', i.status === 'open' || i.status === 'acknowledged'),
      act('FP', 'false-positive', 'danger', i.status !== 'false_positive')));
}

function triage(id, action, body) {
  return api(`/api/incidents/${encodeURIComponent(id)}/${action}`, { method: 'POST', body });
}

function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// ---------------------------------------------------------------------------------------
// Incident page

function incidentView(id) {
  const root = el('div', { id: 'incident' });
  main.append(el('p', null, el('a', { href: '#/queue', text: '← Alert queue' })), root);
  let drawn = false;
  let lastKey = '';
  const refresh = async () => {
    let d;
    try { d = await api(`/api/incidents/${encodeURIComponent(id)}`); } catch (e) {
      clear(root).append(el('p', { class: 'error', text: `Cannot load incident: ${e.message}` }));
      return;
    }
    // Redraw only when this incident changed (the change counter moves for any incident),
    // and never under a note being typed.
    const key = JSON.stringify([d.incident, d.history.length, d.evidence.length, d.timeline.length]);
    if (drawn && key === lastKey) return;
    if (drawn && root.contains(document.activeElement) && document.activeElement.tagName === 'INPUT') return;
    lastKey = key;
    disposeCharts();
    clear(root);
    drawIncident(root, d, refresh);
    drawn = true;
  };
  return { refresh };
}

function drawIncident(root, d, refresh) {
  const i = d.incident;
  const note = el('input', { type: 'text', id: 'triage-note', placeholder: 'note (optional)', maxLength: 2000 });
  const allEndpoints = el('input', { type: 'checkbox', id: 'fp-all' });
  const act = (label, action, cls, enabled) => el('button', {
    type: 'button', class: cls, disabled: !enabled, text: label, dataset: { action },
    onclick: async () => {
      try {
        const out = await triage(i.id, action, { note: note.value, all_endpoints: allEndpoints.checked });
        toast(out.suppression ? `Marked false positive; suppression ${out.suppression.id} created` : `Incident ${statusText(out.incident.status)}`);
        await refresh();
      } catch (e) { toast(`Failed: ${e.message}`); }
    },
  });
  root.append(
    el('h1', { id: 'incident-title', class: 'long-title', title: i.title }, i.title),
    el('div', { class: 'card' },
      el('dl', { class: 'kv' },
        el('dt', null, 'Risk'), el('dd', null, el('span', { class: 'risk', text: fmtNum(i.risk) }), ' ', sevBadge(i.severity)),
        el('dt', null, 'Status'), el('dd', { id: 'incident-status', text: statusText(i.status) }),
        el('dt', null, 'Entity'), el('dd', { class: 'mono long', id: 'incident-entity', text: i.entity }),
        el('dt', null, 'Endpoint'), el('dd', { class: 'mono long', text: i.endpoint || '–' }),
        el('dt', null, 'Category'), el('dd', { class: 'long', text: `${i.category} ${i.category_name}` }),
        el('dt', null, 'Seen'), el('dd', { text: `${fmtTime(i.first_seen_ms)} → ${fmtTime(i.last_seen_ms)} · ${fmtNum(i.alert_count)} alerts` }),
        el('dt', null, 'Id'), el('dd', { class: 'mono long', text: i.id })),
      el('div', { class: 'triage' }, note,
        act('Acknowledge', 'ack', 'secondary', i.status === 'open'),
        act('Resolve', 'resolve', 'secondary', i.status === 'open' || i.status === 'acknowledged'),
        act('False positive', 'false-positive', 'danger', i.status !== 'false_positive'),
        el('label', { class: 'muted' }, allEndpoints, ' suppress on every endpoint'))),
  );

  const grid = el('div', { class: 'grid' });
  root.append(grid);

  // Explanation
  const maxVal = Math.max(1e-9, ...d.explanation.flatMap((r) => [r.observed, r.entity_baseline ?? 0, r.population_p99 ?? 0].map(Math.abs)));
  grid.append(el('section', { class: 'card', id: 'explanation' }, el('h2', null, 'Why it is anomalous'),
    d.explanation.length ? el('table', null,
      el('thead', null, el('tr', null, el('th', { text: 'Feature' }), el('th', { class: 'num', text: 'Observed' }),
        el('th', { class: 'num', text: 'Entity baseline' }), el('th', { class: 'num', text: 'Population p99' }), el('th', { text: 'Share' }))),
      el('tbody', null, d.explanation.map((r) => el('tr', null,
        el('td', { class: 'mono' }, long(r.feature)),
        el('td', { class: 'num', text: fmtNum(r.observed, 2) }),
        el('td', { class: 'num', text: fmtNum(r.entity_baseline, 2) }),
        el('td', { class: 'num', text: fmtNum(r.population_p99, 2) }),
        el('td', { title: r.contribution == null ? '' : fmtPct(r.contribution) }, barOf(r.contribution ?? Math.abs(r.observed) / maxVal)))))) :
      el('p', { class: 'empty', text: 'No explanation recorded.' })));

  // Timeline
  const tl = el('div', { class: 'chart', id: 'timeline-chart' });
  grid.append(el('section', { class: 'card' }, el('h2', null, 'Traffic of this entity (per minute)'), tl));
  if (d.timeline.length) {
    requestAnimationFrame(() => chart(tl, {
      height: 220,
      series: [{}, { label: 'requests', stroke: '#2f6fb3', width: 1.5 },
        { label: 'anomalous', stroke: '#d9480f', fill: 'rgba(217,72,15,.25)', width: 0,
          points: { show: true, size: 6, fill: '#d9480f' }, paths: uPlot.paths.bars({ size: [0.6, 10] }) }],
      // One minute of traffic would otherwise stretch the axis over years.
      scales: { x: { range: (_u, min, max) => (max - min < 600 ? [min - 1800, max + 1800] : [min, max]) } },
      axes: [{}, { label: 'requests' }],
    }, [secs(d.timeline), d.timeline.map((p) => p.requests), d.timeline.map((p) => (p.anomalous ? p.anomalous : null))]));
  } else tl.append(el('p', { class: 'empty', text: 'No traffic kept for this entity.' }));

  // Profile
  const p = d.profile;
  const list = (title, rows) => el('div', null, el('h3', { class: 'muted', text: title }),
    el('table', null, el('tbody', null, rows.map((r) => el('tr', null, clipCell(r.name, 'mono'), el('td', { class: 'num', text: fmtNum(r.count) }))))));
  grid.append(el('section', { class: 'card', id: 'profile' }, el('h2', null, 'Behaviour profile'),
    el('div', { class: 'stats' },
      stat('requests', fmtNum(p.requests)), stat('endpoints', fmtNum(p.distinct_endpoints)),
      stat('errors', fmtPct(p.error_share)), stat('authenticated', fmtPct(p.authenticated_share))),
    p.model_profile ? el('p', { class: 'mono', id: 'model-profile' }, el('span', { class: 'muted', text: 'Model profile: ' }), el('span', { text: p.model_profile })) : null,
    list('Top endpoints', p.top_endpoints), list('Methods', p.methods),
    list('Status classes', p.status_classes), list('User agents', p.user_agents)));

  // Evidence SQL
  const sql = el('pre', { class: 'sql mono', id: 'evidence-sql', text: d.evidence_sql });
  grid.append(el('section', { class: 'card' }, el('h2', null, 'Evidence SQL'), sql,
    el('button', { type: 'button', class: 'secondary', text: 'Copy', onclick: async () => {
      try { await navigator.clipboard.writeText(d.evidence_sql); toast('SQL copied'); } catch {
        const r = document.createRange(); r.selectNodeContents(sql);
        const s = getSelection(); s.removeAllRanges(); s.addRange(r); toast('Press Ctrl+C to copy');
      }
    } })));

  // Evidence requests
  root.append(el('section', { class: 'card table-wrap', id: 'evidence' }, el('h2', null, `Evidence requests (${d.evidence.length})`),
    d.evidence.length ? el('table', null,
      el('colgroup', null, [13, 5, 24, 18, 5, 9, 20, 6].map((w) => el('col', { width: `${w}%` }))),
      el('thead', null, el('tr', null, ['Time', 'Method', 'Path', 'Query', 'Status', 'Address', 'User agent', 'Risk']
        .map((h) => el('th', { text: h })))),
      el('tbody', null, d.evidence.map((r) => el('tr', null,
        el('td', { text: fmtTime(r.ts_ms) }), clipCell(r.method, 'mono'),
        el('td', { class: 'mono path' }, long(r.path)), el('td', { class: 'mono query' }, long(r.query)),
        el('td', { class: 'num', text: r.status }), clipCell(r.source_ip, 'mono'),
        clipCell(r.user_agent, 'ua'), el('td', { class: 'num', text: fmtNum(r.risk) }))))) :
      el('p', { class: 'empty', text: 'No anomalous requests kept.' })));

  if (d.history.length) {
    root.append(el('section', { class: 'card' }, el('h2', null, 'Triage history'),
      el('table', null, el('tbody', null, d.history.map((h) => el('tr', null,
        el('td', { text: fmtTime(h.at_ms) }), el('td', { text: statusText(h.action) }), el('td', null, long(h.note))))))));
  }
}

function stat(k, v) {
  return el('div', { class: 'stat' }, el('div', { class: 'v', text: v }), el('div', { class: 'k', text: k }));
}
function barOf(share) {
  const b = el('div', { class: 'bar' });
  b.style.width = `${Math.max(0, Math.min(1, share || 0)) * 100}%`; // CSSOM, allowed by the CSP
  return b;
}

// ---------------------------------------------------------------------------------------
// Overview

function overviewView() {
  const root = el('div', { id: 'overview' });
  main.append(el('h1', null, 'Overview'), root);
  const refresh = async () => {
    const o = await api('/api/overview?minutes=60');
    disposeCharts();
    clear(root);
    const rates = el('div', { class: 'chart', id: 'rates-chart' });
    const cats = el('div', { class: 'chart', id: 'category-chart' });
    const pl = o.pipeline;
    root.append(
      el('section', { class: 'card' }, el('h2', null, 'Traffic, errors and alerts per minute (last hour of event time)'), rates),
      el('div', { class: 'grid' },
        riskTable('Top clients by risk', 'top-clients', o.top_clients, (name) => ({ entity: name })),
        riskTable('Top endpoints by risk', 'top-endpoints', o.top_endpoints, (name) => ({ endpoint: name.split(' ').slice(1).join(' ') || name })),
        el('section', { class: 'card' }, el('h2', null, 'Alerts by OWASP category'), cats,
          el('table', { id: 'by-category' }, el('tbody', null, o.by_category.map((c) => el('tr', null,
            el('td', { class: 'mono', text: c.category }), el('td', { text: c.name }), el('td', { class: 'num', text: fmtNum(c.alerts) })))))),
        el('section', { class: 'card', id: 'pipeline' }, el('h2', null, 'Pipeline health'),
          el('div', { class: 'stats' }, stat('events/s', fmtNum(pl.events_per_sec, 1)), stat('events', fmtNum(pl.events_total)),
            stat('lag (records)', pl.lag_records == null ? '–' : fmtNum(pl.lag_records)),
            stat('event delay', pl.event_delay_ms == null ? '–' : `${fmtNum(pl.event_delay_ms / 1000, 1)} s`)),
          el('h3', { class: 'muted', text: 'Dead letters by reason' }),
          pl.dead_letters.length ? el('table', null, el('tbody', null, pl.dead_letters.map((r) => el('tr', null,
            clipCell(r.name, 'mono'), el('td', { class: 'num', text: fmtNum(r.count) }))))) : el('p', { class: 'empty', text: 'None.' }))));
    requestAnimationFrame(() => {
      if (o.rates.length) chart(rates, {
        height: 240,
        series: [{}, { label: 'requests', stroke: '#2f6fb3', width: 1.5 }, { label: 'errors', stroke: '#e8a400', width: 1.5 },
          { label: 'alerts', stroke: '#a4161a', width: 2, scale: 'alerts' }],
        axes: [{}, { label: 'requests' }, { scale: 'alerts', side: 1, label: 'alerts', grid: { show: false } }],
      }, [secs(o.rates), o.rates.map((p) => p.requests), o.rates.map((p) => p.errors), o.rates.map((p) => p.alerts)]);
      if (o.by_category.length) {
        const labels = o.by_category.map((c) => c.category.replace(/:2023$/, ''));
        chart(cats, {
          height: 200, scales: { x: { time: false } }, legend: { show: false },
          series: [{}, { label: 'alerts', stroke: '#2f6fb3', fill: 'rgba(47,111,179,.6)', paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false } }],
          axes: [{ values: (_u, ticks) => ticks.map((t) => labels[t] ?? ''), splits: () => labels.map((_, i) => i) }, {}],
        }, [labels.map((_, i) => i), o.by_category.map((c) => c.alerts)]);
      }
    });
  };
  return { refresh, periodic: 5 };
}

function riskTable(title, id, rows, filter) {
  return el('section', { class: 'card', id }, el('h2', null, title),
    rows.length ? el('table', null,
      el('colgroup', null, [46, 14, 20, 20].map((w) => el('col', { width: `${w}%` }))),
      el('thead', null, el('tr', null, ['Name', 'Risk', 'Incidents', 'Requests'].map((h, i) => el('th', { class: i ? 'num' : '', text: h })))),
      el('tbody', null, rows.map((r) => el('tr', {
        class: 'row', onclick: () => { Object.assign(queueFilters, { entity: '', endpoint: '' }, filter(r.name)); location.hash = '#/queue'; },
      }, clipCell(r.name, 'mono'), el('td', { class: 'num risk', text: fmtNum(r.risk) }),
      el('td', { class: 'num', text: fmtNum(r.incidents) }), el('td', { class: 'num', text: fmtNum(r.requests) }))))) :
      el('p', { class: 'empty', text: 'Nothing open.' }));
}

// ---------------------------------------------------------------------------------------
// API inventory

function inventoryView() {
  const body = el('tbody', { id: 'inventory-body' });
  const note = el('p', { class: 'muted' });
  let rows = [];
  let filter = '';
  const draw = () => {
    clear(body);
    const shown = rows.filter((r) => !filter || `${r.method} ${r.route}`.toLowerCase().includes(filter)).slice(0, 1000);
    for (const r of shown) {
      body.append(el('tr', null,
        clipCell(r.method, 'mono'), el('td', { class: 'mono route' }, long(r.route)),
        el('td', null, r.shadow && el('span', { class: 'badge flag flag-shadow', text: 'shadow' }),
          r.zombie && el('span', { class: 'badge flag flag-zombie', text: 'zombie' }),
          r.newly_seen && el('span', { class: 'badge flag flag-new', text: 'new' })),
        el('td', { text: r.auth }), el('td', { class: 'num', text: fmtNum(r.requests) }),
        el('td', { class: 'num', text: fmtPct(r.error_share) }),
        el('td', { text: fmtTime(r.first_seen_ms) }), el('td', { text: fmtTime(r.last_seen_ms) })));
    }
  };
  const refresh = async () => {
    const inv = await api('/api/inventory');
    rows = inv.endpoints;
    const n = (k) => rows.filter((r) => r[k]).length;
    note.textContent = `${fmtNum(rows.length)} endpoints · ${n('shadow')} shadow · ${n('zombie')} zombie · ${n('newly_seen')} newly seen` +
      (inv.has_spec ? '' : ' · no API specification loaded, so shadow and zombie are unknown');
    draw();
  };
  main.append(el('h1', null, 'API inventory'), note,
    el('form', { class: 'filters', onsubmit: (e) => e.preventDefault() }, el('label', null, 'Filter',
      el('input', { type: 'search', placeholder: 'method or route', oninput: (e) => { filter = e.target.value.toLowerCase(); draw(); } }))),
    el('div', { class: 'card table-wrap' }, el('table', { id: 'inventory' },
      el('colgroup', null, [6, 34, 12, 10, 8, 7, 11.5, 11.5].map((w) => el('col', { width: `${w}%` }))),
      el('thead', null, el('tr', null, ['Method', 'Route', 'Flags', 'Auth', 'Requests', 'Errors', 'First seen', 'Last seen']
        .map((h) => el('th', { text: h })))), body)));
  return { refresh, periodic: 5 };
}

// ---------------------------------------------------------------------------------------
// Suppressions

function suppressionsView() {
  const body = el('tbody', { id: 'suppressions-body' });
  main.append(el('h1', null, 'Suppressions'),
    el('p', { class: 'muted', text: 'Created by marking an incident a false positive; the scorer opens no incident for alerts they cover.' }),
    el('div', { class: 'card table-wrap' }, el('table', { id: 'suppressions' },
      el('thead', null, el('tr', null, ['Id', 'Entity', 'Endpoint', 'Category', 'Created', 'From incident', 'Hits', 'Note']
        .map((h) => el('th', { text: h })))), body)));
  const refresh = async () => {
    const rows = await api('/api/suppressions');
    clear(body);
    if (!rows.length) body.append(el('tr', null, el('td', { colSpan: 8, class: 'empty', text: 'No suppressions.' })));
    for (const s of rows) {
      body.append(el('tr', { dataset: { id: s.id } }, el('td', { class: 'mono', text: s.id }), clipCell(s.entity, 'mono entity'),
        clipCell(s.endpoint ?? 'every endpoint', 'mono'), el('td', { text: s.category }), el('td', { text: fmtTime(s.created_ms) }),
        el('td', null, el('a', { href: `#/incident/${encodeURIComponent(s.created_from)}`, text: s.created_from })),
        el('td', { class: 'num', text: fmtNum(s.hits) }), el('td', null, long(s.note))));
    }
  };
  return { refresh, periodic: 3 };
}

// ---------------------------------------------------------------------------------------

async function start() {
  try { meta = await api('/api/meta'); } catch { /* keep defaults; poll() reports the error */ }
  document.getElementById('logout').hidden = !meta.auth;
  window.addEventListener('hashchange', route);
  route();
}
start();
