// Browser tests of the gatewatch dashboard: headless Debian Chromium driven by
// playwright-core. Point them at any running dashboard:
//
//   GATEWATCH_DASHBOARD_URL   base URL (required), e.g. http://127.0.0.1:8080/
//   GATEWATCH_DASHBOARD_TOKEN access token, when the dashboard has one
//   GATEWATCH_E2E_HOSTILE     JSON array of hostile strings planted in the data; each must
//                             show up as literal text (optional: without it the no-script
//                             and layout checks still run on whatever data is there)
//   GATEWATCH_E2E_HOSTILE_MIN how many of them must (default: all). A live demo plants them
//                             as client ids of requests, and only those its detectors flag
//                             become incidents: the CI run asks for some, not all.
//   GATEWATCH_E2E_SCREENSHOTS folder for screenshots (default ./screenshots)
//   CHROMIUM_PATH             browser binary (default /usr/bin/chromium)
//
// `run.sh` starts the `serve_memory` example with the hostile fixture and runs this file.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = process.env.GATEWATCH_DASHBOARD_URL;
if (!BASE) throw new Error('set GATEWATCH_DASHBOARD_URL to the dashboard under test (see run.sh)');
const base = new URL(BASE);
const TOKEN = process.env.GATEWATCH_DASHBOARD_TOKEN || '';
const HOSTILE = process.env.GATEWATCH_E2E_HOSTILE
  ? JSON.parse(fs.readFileSync(process.env.GATEWATCH_E2E_HOSTILE, 'utf8')) : [];
const HOSTILE_MIN = process.env.GATEWATCH_E2E_HOSTILE_MIN
  ? Number(process.env.GATEWATCH_E2E_HOSTILE_MIN) : HOSTILE.length;
if (!(HOSTILE_MIN >= 0 && HOSTILE_MIN <= HOSTILE.length)) {
  throw new Error(`GATEWATCH_E2E_HOSTILE_MIN must be between 0 and ${HOSTILE.length}`);
}
const SHOTS = process.env.GATEWATCH_E2E_SCREENSHOTS || path.join(path.dirname(fileURLToPath(import.meta.url)), 'screenshots');
fs.mkdirSync(SHOTS, { recursive: true });

const url = (p) => new URL(p, base).toString();
let browser;
let context; // logged in
const incidents = []; // hostile ids seen, for the incident-page sweep

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context = await newWatchedContext();
  if (TOKEN) {
    const page = await context.newPage();
    await page.goto(url('/login'));
    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('button[type=submit]')]);
    await page.close();
  }
});

after(async () => {
  await browser?.close();
});

/**
 * A context whose pages record every sign of script running where it should not: dialogs
 * (alert/confirm/prompt), the `window.__pwned` canary the hostile fixture sets, CSP and
 * Trusted Types violations, uncaught page errors.
 */
async function newWatchedContext() {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await ctx.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`);
    });
    let pwned;
    Object.defineProperty(window, '__pwned', {
      configurable: false,
      get: () => pwned,
      set: (v) => { pwned = v; window.__violations.push(`canary set to ${v}`); },
    });
  });
  ctx.__events = [];
  ctx.on('page', (page) => watch(page, ctx.__events));
  return ctx;
}

function watch(page, events) {
  page.on('dialog', (d) => { events.push(`dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => events.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') events.push(`console: ${m.text()}`); });
}

async function assertClean(page, where) {
  const v = await page.evaluate(() => ({ violations: window.__violations, pwned: window.__pwned }));
  assert.equal(v.pwned, undefined, `${where}: canary fired`);
  assert.deepEqual(v.violations, [], `${where}: CSP / Trusted Types violations`);
  const events = context.__events.filter((e) => !e.startsWith('console: Failed to load resource'));
  assert.deepEqual(events, [], `${where}: dialogs or errors`);
}

/** Nothing sticks out of the viewport or out of its table. */
async function assertLayout(page, where) {
  const bad = await page.evaluate(() => {
    const out = [];
    const vw = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth > vw + 1) out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
    for (const td of document.querySelectorAll('main td')) {
      const t = td.closest('table').getBoundingClientRect();
      const r = td.getBoundingClientRect();
      if (r.right > t.right + 1 || r.left < t.left - 1) out.push(`cell outside its table: ${td.textContent.slice(0, 60)}`);
      if (r.height > 400) out.push(`cell ${Math.round(r.height)}px tall: ${td.textContent.slice(0, 60)}`);
    }
    for (const c of document.querySelectorAll('main .card')) {
      const r = c.getBoundingClientRect();
      if (r.right > vw + 1) out.push(`card past the viewport: ${c.id || c.className}`);
    }
    return out.slice(0, 10);
  });
  assert.deepEqual(bad, [], `${where}: layout broken`);
}

/** No element the data could have smuggled in exists in the page body. */
async function assertNoInjectedMarkup(page, where) {
  const found = await page.evaluate(() => {
    const sel = 'main script, main img, main iframe, main svg, main style, main base, main meta, main link, ' +
      'main math, main details, main template, main noscript, main object, main embed, main body, main [onerror], ' +
      'main [onload], main [onfocus], main [ontoggle], main [style*="position:fixed"], main [autofocus]';
    const n = [...document.querySelectorAll(sel)].map((e) => e.outerHTML.slice(0, 80));
    const h1 = document.querySelectorAll('main h1').length;
    if (h1 > 1) n.push(`${h1} h1 elements`);
    const links = [...document.querySelectorAll('a[href]')].filter((a) => !/^(https?:|#|\/)/.test(a.getAttribute('href')) ||
      (a.protocol !== 'http:' && a.protocol !== 'https:'));
    for (const a of links) n.push(`link to ${a.getAttribute('href').slice(0, 60)}`);
    return n;
  });
  assert.deepEqual(found, [], `${where}: markup from data`);
}

async function openQueue(page, status = 'active') {
  await page.goto(url('/#/queue'));
  await page.waitForSelector('#queue-body tr');
  if (status !== 'active') {
    await page.selectOption('select[name=status]', status);
  }
  await page.waitForFunction(() => /shown of/.test(document.getElementById('queue-count')?.textContent || ''));
}

const queueTotal = (page) => page.evaluate(() => {
  const m = /of ([\d,]+)/.exec(document.getElementById('queue-count').textContent);
  return m ? Number(m[1].replace(/,/g, '')) : -1;
});

test('security headers and auth on the page itself', async () => {
  const anon = await browser.newContext();
  const page = await anon.newPage();
  const resp = await page.goto(url('/'));
  const h = (await page.goto(url('/assets/app.css'))).headers();
  assert.match(h['content-security-policy'], /script-src 'self'/);
  assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(h['x-content-type-options'], 'nosniff');
  if (TOKEN) {
    assert.equal(new URL(resp.url()).pathname, '/login', 'unauthenticated visitors land on the login form');
    await page.goto(url('/login'));
    await page.fill('#token', 'not-the-token-at-all');
    await page.click('button[type=submit]');
    await page.waitForSelector('#login-error:not([hidden])');
    const api = await page.request.get(url('/api/incidents'));
    assert.equal(api.status(), 401);
  }
  // Trusted Types: the markup sinks are closed to strings on this origin.
  await page.goto(url('/login'));
  const tt = await page.evaluate(() => { try { document.body.innerHTML = '<b>x</b>'; return 'assigned'; } catch (e) { return e.name; } });
  assert.equal(tt, 'TypeError', 'innerHTML with a string must throw under Trusted Types');
  await anon.close();
});

test('incidents appear live without a reload', async () => {
  const page = await context.newPage();
  await openQueue(page);
  await page.evaluate(() => { window.__sameDocument = true; });
  const before = await queueTotal(page);
  assert.ok(before > 0, 'the queue has incidents');
  await page.screenshot({ path: path.join(SHOTS, 'queue.png') });
  await page.waitForFunction((n) => {
    const m = /of ([\d,]+)/.exec(document.getElementById('queue-count').textContent);
    return m && Number(m[1].replace(/,/g, '')) > n;
  }, before, { timeout: 45_000, polling: 250 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload happened');
  await assertClean(page, 'queue');
  await page.close();
});

test('open an incident', async () => {
  const page = await context.newPage();
  await openQueue(page);
  const row = page.locator('#queue-body tr.row:not([data-id^="hostile-"])').first();
  const id = await row.getAttribute('data-id');
  await row.locator('a').click();
  await page.waitForSelector('#incident-title');
  assert.equal(decodeURIComponent(new URL(page.url()).hash.replace('#/incident/', '')), id);
  await page.waitForSelector('#explanation table tbody tr');
  await page.waitForSelector('#timeline-chart canvas');
  await page.waitForSelector('#evidence table tbody tr');
  const sql = await page.textContent('#evidence-sql');
  assert.match(sql, /SELECT/i);
  assert.ok((await page.locator('#profile table tr').count()) > 0, 'behaviour profile rows');
  await page.screenshot({ path: path.join(SHOTS, 'incident.png'), fullPage: true });
  await assertClean(page, 'incident');
  await page.close();
});

test('filter the queue by severity, category, entity and endpoint', async () => {
  const page = await context.newPage();
  await openQueue(page);
  // The queue marks its body with the query it last drew; wait for the filters' query.
  const settle = async () => {
    const want = await page.evaluate(() => {
      const p = new URLSearchParams();
      for (const e of document.querySelectorAll('#queue-filters select, #queue-filters input')) {
        if (e.value.trim()) p.set(e.name, e.value.trim());
      }
      p.set('limit', '500');
      return `?${p}`;
    });
    await page.waitForFunction((q) => document.getElementById('queue-body').dataset.query === q, want);
  };
  await page.selectOption('select[name=min_severity]', 'high');
  await settle();
  const sevs = await page.$$eval('#queue-body tr.row .badge', (b) => b.map((x) => x.textContent));
  assert.ok(sevs.length > 0, 'some high or critical incidents');
  assert.ok(sevs.every((s) => s === 'high' || s === 'critical'), `severities ${[...new Set(sevs)]}`);
  await page.selectOption('select[name=min_severity]', '');

  await page.selectOption('select[name=category]', 'API2:2023');
  await settle();
  const cats = await page.$$eval('#queue-body tr.row td:nth-child(6)', (t) => t.map((x) => x.textContent));
  assert.ok(cats.every((c) => c === 'API2:2023'), `categories ${[...new Set(cats)]}`);
  await page.selectOption('select[name=category]', '');
  await settle();

  const entity = await page.locator('#queue-body tr.row:not([data-id^="hostile-"]) td.entity').first().textContent();
  await page.fill('input[name=entity]', entity);
  await settle();
  const ents = await page.$$eval('#queue-body tr.row td.entity', (t) => t.map((x) => x.textContent));
  assert.ok(ents.length > 0 && ents.every((e) => e.toLowerCase().includes(entity.toLowerCase())), `entities ${ents}`);
  await page.screenshot({ path: path.join(SHOTS, 'queue-filtered.png') });
  await page.fill('input[name=entity]', '');

  await page.fill('input[name=endpoint]', 'no-such-endpoint-anywhere');
  await settle();
  assert.equal(await page.locator('#queue-body tr.row').count(), 0);
  await page.fill('input[name=endpoint]', '');
  await settle();
  assert.ok(await page.locator('#queue-body tr.row').count() > 0);
  await assertClean(page, 'filters');
  await page.close();
});

test('mark a false positive: it leaves the queue and its suppression is listed', async () => {
  const page = await context.newPage();
  await openQueue(page);
  const row = page.locator('#queue-body tr.row:not([data-id^="hostile-"])').first();
  const id = await row.getAttribute('data-id');
  await row.locator('a').click();
  await page.waitForSelector('#incident-title');
  await page.fill('#triage-note', 'load test from the partner, agreed');
  await page.click('button[data-action="false-positive"]');
  await page.waitForFunction(() => document.getElementById('incident-status')?.textContent === 'false positive');

  await openQueue(page);
  await page.waitForTimeout(500);
  const ids = await page.$$eval('#queue-body tr.row', (rows) => rows.map((r) => r.dataset.id));
  assert.ok(!ids.includes(id), 'the incident left the open queue');
  await page.selectOption('select[name=status]', 'false_positive');
  await page.waitForFunction((id) => [...document.querySelectorAll('#queue-body tr.row')].some((r) => r.dataset.id === id), id);

  await page.goto(url('/#/suppressions'));
  await page.waitForSelector('#suppressions-body tr[data-id]');
  const from = await page.$$eval('#suppressions-body tr[data-id] td:nth-child(6)', (t) => t.map((x) => x.textContent));
  assert.ok(from.includes(id), 'the suppression lists the incident it came from');
  await page.screenshot({ path: path.join(SHOTS, 'suppressions.png') });

  // Honoured: the scorer's side — the incident stays out of the queue while its entity
  // keeps sending the same traffic.
  await page.waitForTimeout(3000);
  const r = await page.request.get(url('/api/incidents?limit=500'), { headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {} });
  const active = (await r.json()).incidents.map((i) => i.id);
  assert.ok(!active.includes(id), 'still out of the queue after more traffic');
  await assertClean(page, 'false positive');
  await page.close();
});

test('overview and inventory', async () => {
  const page = await context.newPage();
  await page.goto(url('/#/overview'));
  await page.waitForSelector('#rates-chart canvas');
  await page.waitForSelector('#category-chart canvas');
  await page.waitForSelector('#top-clients tbody tr');
  await page.waitForSelector('#pipeline .stat');
  await page.screenshot({ path: path.join(SHOTS, 'overview.png'), fullPage: true });
  await page.goto(url('/#/inventory'));
  await page.waitForSelector('#inventory-body tr');
  const flags = await page.$$eval('#inventory-body .flag', (f) => f.map((x) => x.textContent));
  assert.ok(flags.length > 0, 'some endpoints carry shadow / zombie / new flags');
  await page.screenshot({ path: path.join(SHOTS, 'inventory.png') });
  await assertClean(page, 'overview and inventory');
  await page.close();
});

test('hostile data renders as text: no script runs, nothing breaks the layout', async () => {
  const page = await context.newPage();
  await openQueue(page, 'all');
  const text = await page.textContent('main');
  const shownLiterally = (p) => text.includes(p.slice(0, 120))
    || text.includes(p.replace(/\u0000/g, '\uFFFD').slice(0, 120));
  const shown = HOSTILE.filter(shownLiterally);
  if (HOSTILE_MIN === HOSTILE.length) {
    for (const p of HOSTILE) assert.ok(shownLiterally(p), `payload shown literally: ${p.slice(0, 60)}`);
  }
  assert.ok(shown.length >= HOSTILE_MIN, `hostile payloads shown literally: ${shown.length} of ${HOSTILE.length}, want ${HOSTILE_MIN}`);
  await assertNoInjectedMarkup(page, 'queue');
  await assertLayout(page, 'queue');
  await page.screenshot({ path: path.join(SHOTS, 'hostile-queue.png') });

  // Hostile incidents: planted under `hostile-` ids (the in-memory backend), or about a
  // client named by a hostile string (a live demo).
  const rows = await page.$$eval('#queue-body tr.row', (rs) => rs.map((r) => ({
    id: r.dataset.id, entity: r.querySelector('td.entity')?.getAttribute('title') ?? '',
  })));
  const ids = rows.map((r) => r.id);
  const hostileIds = rows.filter((r) => r.id.startsWith('hostile-')
    || HOSTILE.some((p) => r.entity === p || r.entity === p.replace(/\u0000/g, '\uFFFD'))).map((r) => r.id);
  assert.ok(hostileIds.length >= HOSTILE_MIN, `hostile incidents listed: ${hostileIds.length}, want ${HOSTILE_MIN}`);
  for (const id of (hostileIds.length ? hostileIds : ids.slice(0, 5))) {
    await page.goto(url(`/#/incident/${encodeURIComponent(id)}`));
    await page.waitForSelector('#incident-title');
    await page.waitForSelector('#evidence');
    assert.equal(await page.textContent('#incident-entity') !== null, true);
    await assertNoInjectedMarkup(page, `incident ${id.slice(0, 40)}`);
    await assertLayout(page, `incident ${id.slice(0, 40)}`);
  }
  await page.screenshot({ path: path.join(SHOTS, 'hostile-incident.png'), fullPage: true });

  // A hostile id in the address bar is only ever text, too.
  await page.goto(url('/#/incident/' + encodeURIComponent('<img src=x onerror=alert(1)>')));
  await page.waitForSelector('#incident .error');
  for (const view of ['overview', 'inventory', 'suppressions']) {
    await page.goto(url(`/#/${view}`));
    await page.waitForSelector(`main table`);
    await page.waitForTimeout(300);
    await assertNoInjectedMarkup(page, view);
    await assertLayout(page, view);
  }
  await assertClean(page, 'hostile sweep');
  await page.close();
});

test('triage is refused without the CSRF header, and GETs change nothing', async () => {
  const page = await context.newPage();
  await page.goto(url('/#/queue'));
  const result = await page.evaluate(async () => {
    const list = await (await fetch('/api/incidents?limit=1')).json();
    const id = list.incidents[0].id;
    const post = (headers) => fetch(`/api/incidents/${encodeURIComponent(id)}/ack`, { method: 'POST', headers, body: '{}' });
    const noHeader = (await post({ 'Content-Type': 'application/json' })).status;
    const formType = (await post({ 'Content-Type': 'application/x-www-form-urlencoded', 'X-Gatewatch-Request': '1' })).status;
    const getAck = (await fetch(`/api/incidents/${encodeURIComponent(id)}/ack`)).status;
    const after = await (await fetch(`/api/incidents/${encodeURIComponent(id)}`)).json();
    return { noHeader, formType, getAck, status: after.incident.status };
  });
  assert.equal(result.noHeader, 403);
  assert.equal(result.formType, 415);
  assert.equal(result.getAck, 405);
  assert.equal(result.status, 'open');
  await page.close();
});
