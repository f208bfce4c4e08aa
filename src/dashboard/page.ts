/**
 * The dashboard's page: one self-contained HTML document (styles and script inline, no network
 * access needed), built into the package. It reads the same JSON the clients use (`opt=list`,
 * `status_json`, `view&num`), `/dashboard/info` and `/dashboard/history` by short polling, and
 * draws its charts as SVG: from the server's history, so that they are full as soon as the page
 * opens; live rates come from successive polls.
 * Everything that comes from queue names or messages goes into the page as text nodes, never as
 * markup.
 */
export const DASHBOARD_HTML = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>httpsqs dashboard</title>
<style>
  :root { --bg: #f6f7f9; --card: #fff; --ink: #1c2330; --muted: #667085; --line: #e4e7ec; --put: #2563eb; --get: #16a34a; --warn: #b42318; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--ink); }
  header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 16px; padding: 14px 20px; background: var(--ink); color: #fff; }
  header h1 { margin: 0; font-size: 18px; letter-spacing: .02em; }
  header a { color: inherit; text-decoration: none; }
  #facts { color: #c8cfdb; font-size: 13px; }
  #live { margin-left: auto; font-size: 12px; color: #9fe0b0; }
  #live.connecting { color: #98a2b3; }
  #live.stale { color: #ffb4a9; }
  main { max-width: 1200px; margin: 0 auto; padding: 16px 20px 40px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; margin-bottom: 16px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
  .card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  .card .v { font-size: 22px; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
  .panel { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px; margin-bottom: 16px; }
  .panel h2 { margin: 0 0 10px; font-size: 15px; }
  .toolbar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 10px; }
  input, button, select { font: inherit; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; color: var(--ink); }
  button { cursor: pointer; background: var(--ink); color: #fff; border-color: var(--ink); }
  button.secondary { background: #fff; color: var(--ink); border-color: var(--line); }
  button.danger { background: var(--warn); border-color: var(--warn); }
  button:disabled { opacity: .5; cursor: default; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { padding: 7px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
  th:first-child, td:first-child { text-align: left; }
  td.name { max-width: 340px; overflow: hidden; text-overflow: ellipsis; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; cursor: pointer; user-select: none; }
  th button.sort { all: unset; cursor: pointer; }
  th button.sort:focus-visible { outline: 2px solid var(--put); outline-offset: 2px; border-radius: 2px; }
  th.sorted::after { content: " ▾"; }
  th.sorted.asc::after { content: " ▴"; }
  tbody tr:hover { background: #f9fafb; }
  a.q { color: var(--put); text-decoration: none; }
  .legend { color: var(--muted); font-size: 12px; }
  .legend .put { color: var(--put); } .legend .get { color: var(--get); }
  .pager { display: flex; gap: 8px; align-items: center; justify-content: flex-end; margin-top: 10px; color: var(--muted); }
  .msg { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; white-space: pre-wrap; word-break: break-all; text-align: left; }
  tr.read td { color: var(--muted); }
  .tag { display: inline-block; padding: 1px 6px; border-radius: 10px; font-size: 11px; }
  .tag.unread { background: #dbeafe; color: #1e40af; } .tag.read { background: #eef0f3; color: var(--muted); } .tag.leased { background: #fef3c7; color: #92400e; }
  td.dead.some, .card .v.some { color: var(--warn); font-weight: 600; }
  .notice { padding: 8px 12px; border-radius: 6px; background: #fef3f2; color: var(--warn); margin-bottom: 12px; }
  .ok { background: #ecfdf3; color: #067647; }
  #login { max-width: 360px; margin: 60px auto; }
  svg { display: block; width: 100%; }
  /* Below the page's full width, a long name gives way for the rates (its title holds it all). */
  @media (max-width: 1199px) { td.name { max-width: 160px; } }
  @media (max-width: 700px) {
    .wide { display: none; }
    main { padding: 12px; }
    td.name { max-width: 160px; }
  }
</style>
</head>
<body>
<header><h1><a href="#">httpsqs</a></h1><span id="facts">connecting…</span><span id="live" class="connecting" title="connecting" role="status">●</span></header>
<main id="app"></main>
<script>
"use strict";
const app = document.getElementById('app');
const params = new URLSearchParams(location.search);
// A password given in the address (/dashboard?auth=...) is kept for this tab and taken out of the
// address, so that it stays in neither the browser's history nor the address bar.
if (params.has('auth')) {
  sessionStorage.setItem('httpsqs-auth', params.get('auth'));
  params.delete('auth');
  const rest = params.toString();
  history.replaceState(history.state, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
}
let auth = sessionStorage.getItem('httpsqs-auth') ?? '';
let adminAuth = sessionStorage.getItem('httpsqs-admin-auth') ?? '';
const SAMPLES = 300; // polls kept per queue (5 minutes at one a second)
const samples = new Map(); // key -> [{t, putpos, getpos, maxqueue}]
// /dashboard/history: puts and gets per bucket, in total and for the busiest queues (by key).
let serverHistory = null;
let tracked = new Map();
let queues = [];
let facts = null;
let view = { search: '', sort: 'unread', asc: false, page: 0, size: 50 };
let msgPage = null; // the queue page's first position shown
let timer = null;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

class AuthNeeded extends Error {}

/** A queue as the page knows it: its name read as UTF-8 and, when that reading loses bytes, the
 * bytes themselves (name64, from opt=list). The key tells queues apart; param addresses one. */
const keyOf = (ref) => (ref.name64 ? 'b ' + ref.name64 : 'q ' + ref.name);
const param = (ref) => ref.name64 ? Array.from(atob(ref.name64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join('') : encodeURIComponent(ref.name);

/** A request the server does not answer within WAIT_MS fails (the dot turns red, the next refresh
 * asks again) instead of holding every refresh after it. A timer of the page's own, not
 * AbortSignal.timeout, so that a test's clock can move it. */
const WAIT_MS = 10000;
async function fetchWithin(url, init, read) {
  const c = new AbortController();
  const t = setTimeout(() => c.abort(new Error('no answer from the server in ' + WAIT_MS / 1000 + ' s')), WAIT_MS);
  try { return await read(await fetch(url, { ...init, cache: 'no-store', signal: c.signal })); } finally { clearTimeout(t); }
}

/** Values are strings, or queue references (for name and after). */
async function api(query, { admin = false, method = 'GET', body } = {}) {
  const q = new URLSearchParams();
  const refs = [];
  for (const [k, v] of Object.entries(query)) if (typeof v === 'string') q.set(k, v); else refs.push(k + '=' + param(v));
  const pass = admin && adminAuth ? adminAuth : auth;
  if (pass) q.set('auth', pass);
  const text = await fetchWithin('/?' + [...refs, q.toString()].join('&'), { method, body }, (r) => r.text());
  if (text === 'HTTPSQS_AUTH_FAILED') throw new AuthNeeded(admin ? 'admin' : 'user');
  return text;
}

async function json(query) {
  const t = await api(query);
  try { return JSON.parse(t); } catch { throw new Error(t); }
}

async function loadAll() {
  const all = [];
  for (let after = null; ;) {
    const page = await json({ opt: 'list', limit: '1000', ...(after ? { after } : {}) });
    all.push(...page);
    if (page.length < 1000) break;
    after = page[page.length - 1];
  }
  return all;
}

function moved(now, then, maxqueue) { return now >= then ? now - then : now + maxqueue - then; }

/** Puts and gets a second for a queue's samples, oldest first. */
function rates(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const secs = (b.t - a.t) / 1000;
    const reset = b.maxqueue !== a.maxqueue || (b.putpos < a.putpos && b.putpos >= b.getpos && b.getpos < a.getpos);
    out.push(reset || secs <= 0 ? { put: 0, get: 0 } : { put: moved(b.putpos, a.putpos, b.maxqueue) / secs, get: moved(b.getpos, a.getpos, b.maxqueue) / secs });
  }
  return out;
}

function record(list) {
  const t = Date.now();
  const seen = new Set();
  for (const q of list) {
    seen.add(keyOf(q));
    const h = samples.get(keyOf(q)) ?? [];
    h.push({ t, putpos: q.putpos, getpos: q.getpos, maxqueue: q.maxqueue });
    if (h.length > SAMPLES) h.shift();
    samples.set(keyOf(q), h);
  }
  for (const key of samples.keys()) if (!seen.has(key)) samples.delete(key);
}

/** Puts and gets a second for each bucket of a series of the server's history. The newest bucket
 * is still filling: its rate is over the part gone by (a second at least, not to jump). */
function bucketRates(series) {
  const h = serverHistory;
  const secs = h.bucketMs / 1000;
  const filled = Math.min(secs, Math.max(1, (h.now - h.last * h.bucketMs) / 1000));
  const n = series.put.length;
  return series.put.map((p, i) => { const d = i === n - 1 ? filled : secs; return { put: p / d, get: series.get[i] / d }; });
}

/** A queue's rates for its charts: from the server's history when the server counts it on its
 * own (the busiest queues), else from the page's polls. */
function queueRates(ref) {
  const h = tracked.get(keyOf(ref));
  return h ? bucketRates(h) : rates(samples.get(keyOf(ref)) ?? []);
}

/** The latest rates: from the last two polls, or before there are two, the last full bucket. */
function latest(ref) {
  const r = rates(samples.get(keyOf(ref)) ?? []);
  if (r.length) return r[r.length - 1];
  const h = tracked.get(keyOf(ref));
  return (h && bucketRates(h).at(-2)) ?? { put: 0, get: 0 };
}

const fmt = (n) => n >= 100 ? Math.round(n).toLocaleString('en') : n >= 1 ? n.toFixed(1) : n > 0 ? n.toFixed(2) : '0';

/** An SVG line chart of put and get rates. */
function chart(series, height = 120, small = false) {
  const ns = 'http://www.w3.org/2000/svg';
  const w = small ? 120 : 600;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + w + ' ' + height);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'chart');
  if (small) { svg.style.width = '120px'; svg.style.height = height + 'px'; }
  const max = Math.max(1, ...series.map((s) => Math.max(s.put, s.get)));
  const line = (key, color) => {
    const p = document.createElementNS(ns, 'polyline');
    const n = Math.max(series.length - 1, 1);
    p.setAttribute('points', series.map((s, i) => (i / n * w).toFixed(1) + ',' + (height - 2 - (s[key] / max) * (height - 6)).toFixed(1)).join(' '));
    p.setAttribute('fill', 'none');
    p.setAttribute('stroke', color);
    p.setAttribute('stroke-width', small ? '1.5' : '2');
    p.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(p);
  };
  line('put', 'var(--put)');
  line('get', 'var(--get)');
  if (small) return svg;
  return el('div', {}, el('div', { class: 'legend', text: 'top of the chart: ' + fmt(max) + '/s' }), svg);
}

function totals() {
  const sum = { unread: 0, leased: 0, delayed: 0, dead: 0, put: 0, get: 0 };
  for (const q of queues) { sum.unread += q.unread; sum.leased += q.leased; sum.delayed += q.delayed ?? 0; sum.dead += q.dead ?? 0; const r = latest(q); sum.put += r.put; sum.get += r.get; }
  return sum;
}

const historySpan = () => serverHistory ? 'last ' + Math.round(serverHistory.total.put.length * serverHistory.bucketMs / 60000) + ' minutes' : 'no history yet';

function showFacts() {
  if (!facts) return;
  const up = Math.round((Date.now() - facts.started) / 1000);
  const uptime = up >= 86400 ? Math.floor(up / 86400) + 'd ' + Math.floor(up % 86400 / 3600) + 'h' : up >= 3600 ? Math.floor(up / 3600) + 'h ' + Math.floor(up % 3600 / 60) + 'm' : Math.floor(up / 60) + 'm ' + (up % 60) + 's';
  document.getElementById('facts').textContent = 'v' + facts.version + ' · up ' + uptime + ' · ' + facts.store + ' · ' + facts.durability + ' · ' + facts.connections + (facts.connections === 1 ? ' connection · ' : ' connections · ') + facts.workers + ' worker' + (facts.workers > 1 ? 's' : '');
}

function card(k, v, id, cls = '') { return el('div', { class: 'card' }, el('div', { class: 'k', text: k }), el('div', { class: 'v' + (cls ? ' ' + cls : ''), text: v, ...(id ? { id } : {}) })); }

function renderOverview() {
  const t = totals();
  const filtered = queues.filter((q) => q.name.toLowerCase().includes(view.search.toLowerCase()));
  const key = { name: (q) => q.name, unread: (q) => q.unread, leased: (q) => q.leased, delayed: (q) => q.delayed ?? 0, dead: (q) => q.dead ?? 0, put: (q) => latest(q).put, get: (q) => latest(q).get, putpos: (q) => q.putpos, getpos: (q) => q.getpos, maxqueue: (q) => q.maxqueue }[view.sort];
  filtered.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : keyOf(a) < keyOf(b) ? -1 : 1) * (view.asc ? 1 : -1); });
  const pages = Math.max(1, Math.ceil(filtered.length / view.size));
  view.page = Math.min(view.page, pages - 1);
  const rows = filtered.slice(view.page * view.size, (view.page + 1) * view.size);
  // The header sorts on a click anywhere in it; its button makes it reachable with Tab (Enter's
  // click on the button reaches the header's handler).
  const head = (label, sort, cls = '') => el('th', { class: cls + (view.sort === sort ? ' sorted' + (view.asc ? ' asc' : '') : ''), ...(view.sort === sort ? { 'aria-sort': view.asc ? 'ascending' : 'descending' } : {}), onclick: () => { view.asc = view.sort === sort ? !view.asc : sort === 'name'; view.sort = sort; render(); } }, el('button', { type: 'button', class: 'sort' }, label));
  const search = el('input', { type: 'search', placeholder: 'Search queues', value: view.search, 'aria-label': 'search queues', id: 'search' });
  search.addEventListener('input', () => { view.search = search.value; view.page = 0; render(); });
  app.replaceChildren(
    el('div', { class: 'cards' }, card('queues', queues.length.toLocaleString('en'), 'total-queues'), card('unread', t.unread.toLocaleString('en'), 'total-unread'), card('leased', t.leased.toLocaleString('en')), card('delayed', t.delayed.toLocaleString('en'), 'total-delayed'), card('dead', t.dead.toLocaleString('en'), 'total-dead', t.dead ? 'some' : ''), card('puts/s', fmt(t.put)), card('gets/s', fmt(t.get))),
    el('div', { class: 'panel', id: 'throughput' }, el('h2', {}, 'Throughput ', el('span', { class: 'legend' }, el('span', { class: 'put', text: '— put' }), ' ', el('span', { class: 'get', text: '— get' }), ' per second, ' + historySpan())), chart(serverHistory ? bucketRates(serverHistory.total) : [])),
    el('div', { class: 'panel' },
      el('div', { class: 'toolbar' }, search, el('span', { class: 'legend', text: filtered.length.toLocaleString('en') + ' of ' + queues.length.toLocaleString('en') + ' queues' })),
      el('div', { style: 'overflow-x:auto' }, el('table', { id: 'queues' },
        el('thead', {}, el('tr', {}, head('Queue', 'name'), head('Unread', 'unread'), head('Leased', 'leased'), head('Delayed', 'delayed'), head('Dead', 'dead'), head('Put pos', 'putpos', 'wide'), head('Get pos', 'getpos', 'wide'), el('th', { class: 'wide', text: 'Laps' }), head('Maxqueue', 'maxqueue', 'wide'), head('Puts/s', 'put'), head('Gets/s', 'get'), el('th', { text: 'Rates' }))),
        el('tbody', {}, ...rows.map((q) => { const r = latest(q); return el('tr', { 'data-queue': q.name },
          el('td', { class: 'name' }, el('a', { class: 'q', href: q.name64 ? '#/b/' + encodeURIComponent(q.name64) : '#/q/' + encodeURIComponent(q.name), title: q.name, text: q.name })),
          el('td', { class: 'unread', text: q.unread.toLocaleString('en') }), el('td', { class: 'leased', text: q.leased }),
          el('td', { class: 'delayed', text: (q.delayed ?? 0).toLocaleString('en') }), el('td', { class: 'dead' + (q.dead ? ' some' : ''), text: (q.dead ?? 0).toLocaleString('en') }),
          el('td', { class: 'wide', text: q.putpos }), el('td', { class: 'wide', text: q.getpos }), el('td', { class: 'wide', text: q.putlap + '/' + q.getlap }), el('td', { class: 'wide', text: q.maxqueue.toLocaleString('en') }),
          el('td', { text: fmt(r.put) }), el('td', { text: fmt(r.get) }), el('td', {}, chart(queueRates(q), 24, true))); })))),
      el('div', { class: 'pager' }, el('button', { class: 'secondary', onclick: () => { view.page--; render(); }, ...(view.page === 0 ? { disabled: '' } : {}) }, '‹ Prev'), 'page ' + (view.page + 1) + ' of ' + pages, el('button', { class: 'secondary', onclick: () => { view.page++; render(); }, ...(view.page >= pages - 1 ? { disabled: '' } : {}) }, 'Next ›'))),
  );
}

function b64text(s) {
  const bytes = Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
}

let notice = null;
async function renderQueue(ref, byTimer) {
  const name = ref;
  const s = queues.find((q) => keyOf(q) === keyOf(ref)) ?? (await json({ name, opt: 'status_json' }));
  const leased = s.leased ?? 0, delayed = s.delayed ?? 0, dead = s.dead ?? 0, maxdeliveries = s.maxdeliveries ?? 0;
  const first = msgPage ?? Math.max(1, s.getpos - 4);
  const msgs = await json({ name, opt: 'view', pos: String(first), num: '20', encoding: 'base64' });
  const letters = dead ? await json({ name, opt: 'dead', num: '20', encoding: 'base64' }) : [];
  const isUnread = (pos) => s.putpos >= s.getpos ? pos > s.getpos && pos <= s.putpos : pos > s.getpos || pos <= s.putpos;
  const maxInput = el('input', { type: 'number', min: '10', value: String(s.maxqueue), 'aria-label': 'maxqueue', id: 'maxqueue-input' });
  const mdInput = el('input', { type: 'number', min: '0', max: '1000', value: String(maxdeliveries), 'aria-label': 'max deliveries', id: 'maxdeliveries-input' });
  const putInput = el('input', { type: 'text', placeholder: 'a test message', 'aria-label': 'message', id: 'put-input' });
  const act = async (label, fn) => {
    // A refusal (HTTPSQS_MAXQUEUE_CANCEL, HTTPSQS_ERROR, ..._NOT_FOUND) is shown as one, not in green.
    try { const reply = String(await fn()); notice = { ok: !/^HTTPSQS_(ERROR|\w+_(END|ERROR|CANCEL|NOT_FOUND))$/.test(reply), text: label + ': ' + reply }; }
    catch (err) { if (err instanceof AuthNeeded) { askAdmin(); return; } notice = { ok: false, text: label + ': ' + err.message }; }
    await refresh();
  };
  // A long name (up to 256 bytes, often without a space) takes a row of its own and wraps.
  const nameCard = card('queue', ref.name, 'queue-name');
  if (ref.name.length > 24) nameCard.style.gridColumn = '1 / -1';
  // Asked again after the fetches: typing, a press or a selection may have begun while they ran.
  if (leaveAsIs(byTimer)) return;
  app.replaceChildren(
    el('p', {}, el('a', { class: 'q', href: '#', text: '‹ all queues' })),
    ...(notice ? [el('div', { class: 'notice' + (notice.ok ? ' ok' : ''), id: 'notice', text: notice.text })] : []),
    el('div', { class: 'cards' }, nameCard, card('unread', s.unread.toLocaleString('en'), 'queue-unread'), card('leased', String(leased), 'queue-leased'), card('delayed', delayed.toLocaleString('en'), 'queue-delayed'), card('dead letters', dead.toLocaleString('en'), 'queue-dead', dead ? 'some' : ''), card('max deliveries', maxdeliveries ? String(maxdeliveries) : 'off', 'queue-maxdeliveries'), card('put pos', s.putpos + ' (lap ' + s.putlap + ')', 'queue-putpos'), card('get pos', String(s.getpos), 'queue-getpos'), card('maxqueue', s.maxqueue.toLocaleString('en'), 'queue-maxqueue')),
    el('div', { class: 'panel' }, el('h2', {}, 'Rates ', el('span', { class: 'legend' }, el('span', { class: 'put', text: '— put' }), ' ', el('span', { class: 'get', text: '— get' }))), chart(queueRates(ref))),
    el('div', { class: 'panel' }, el('h2', { text: 'Actions' }),
      el('div', { class: 'toolbar' }, putInput, el('button', { id: 'put-button', onclick: () => act('put', () => api({ name, opt: 'put' }, { method: 'POST', body: encodeURIComponent(putInput.value || 'test message') })) }, 'Put message')),
      el('div', { class: 'toolbar' }, maxInput, el('button', { id: 'maxqueue-button', onclick: () => act('maxqueue', () => api({ name, opt: 'maxqueue', num: maxInput.value }, { admin: true })) }, 'Set maxqueue')),
      el('div', { class: 'toolbar' }, mdInput, el('button', { id: 'maxdeliveries-button', onclick: () => act('maxdeliveries', () => api({ name, opt: 'maxdeliveries', num: mdInput.value }, { admin: true })) }, 'Set max deliveries (0: off)')),
      el('div', { class: 'toolbar' }, el('button', { class: 'danger', id: 'reset-button', onclick: () => { if (confirm('Reset queue "' + ref.name + '"? Every message in it is deleted.')) act('reset', () => api({ name, opt: 'reset' }, { admin: true })); } }, 'Reset queue…'))),
    ...(letters.length ? [el('div', { class: 'panel', id: 'dead-letters' }, el('h2', {}, 'Dead letters ', el('button', { id: 'redrive-button', onclick: () => act('redrive', () => api({ name, opt: 'redrive' }, { admin: true })) }, 'Redrive all')),
      el('div', { style: 'overflow-x:auto' }, el('table', {}, el('thead', {}, el('tr', {}, el('th', { text: 'Pos' }), el('th', { text: 'Deliveries' }), el('th', { text: 'Died' }), el('th', { style: 'text-align:left', text: 'Message' }), el('th', {}))),
        el('tbody', {}, ...letters.map((d) => el('tr', { 'data-dead': String(d.pos) }, el('td', { text: d.pos }), el('td', { text: d.deliveries }), el('td', { text: new Date(d.died).toLocaleString() }), el('td', { class: 'msg', text: b64text(d.data).slice(0, 500) }),
          el('td', {}, el('button', { class: 'danger', onclick: () => { if (confirm('Discard dead letter ' + d.pos + '? It is deleted for good.')) act('discard ' + d.pos, () => api({ name, opt: 'discard', pos: String(d.pos) }, { admin: true })); } }, 'Discard…'))))))))] : []),
    el('div', { class: 'panel' }, el('h2', { text: 'Messages by position' }),
      el('table', { id: 'messages' }, el('thead', {}, el('tr', {}, el('th', { text: 'Pos' }), el('th', { text: 'State' }), el('th', { style: 'text-align:left', text: 'Message' }))),
        el('tbody', {}, ...(msgs.length ? msgs.map((m) => el('tr', { class: isUnread(m.pos) ? 'unread' : 'read' }, el('td', { text: m.pos }), el('td', {}, el('span', { class: 'tag ' + (isUnread(m.pos) ? 'unread' : 'read'), text: isUnread(m.pos) ? 'unread' : 'read' })), el('td', { class: 'msg', text: b64text(m.data).slice(0, 500) }))) : [el('tr', {}, el('td', { colspan: '3', class: 'legend', text: 'No stored messages at positions ' + first + '–' + (first + 19) }))]))),
      el('div', { class: 'pager' }, el('button', { class: 'secondary', onclick: () => { msgPage = Math.max(1, first - 20); refresh(); }, ...(first <= 1 ? { disabled: '' } : {}) }, '‹ Earlier'), 'positions ' + first + '–' + (first + 19), el('button', { class: 'secondary', onclick: () => { msgPage = first + 20; refresh(); } }, 'Later ›'))),
  );
}

function askAdmin() {
  // A password already given was refused: say so, rather than leave "Admin password set" up.
  const refused = adminAuth !== '';
  notice = null;
  document.getElementById('notice')?.remove();
  const input = el('input', { type: 'password', placeholder: 'admin password', 'aria-label': 'admin password', id: 'admin-input' });
  const form = el('form', { class: 'panel', onsubmit: (e) => { e.preventDefault(); adminAuth = input.value; sessionStorage.setItem('httpsqs-admin-auth', adminAuth); notice = { ok: false, text: 'Admin password set: try the action again.' }; form.remove(); refresh(); } },
    el('h2', { text: 'This action needs the admin password' }), ...(refused ? [el('p', { class: 'notice', role: 'alert', id: 'admin-refused', text: 'The admin password given was not accepted.' })] : []), el('div', { class: 'toolbar' }, input, el('button', {}, 'Use it')));
  app.prepend(form);
  input.focus();
}

function showLogin() {
  clearTimeout(timer);
  // A password was sent and refused (rather than none yet): say so.
  const refused = auth !== '';
  const input = el('input', { type: 'password', placeholder: 'password', 'aria-label': 'password', id: 'password-input' });
  app.replaceChildren(el('form', { id: 'login', class: 'panel', onsubmit: (e) => { e.preventDefault(); auth = input.value; sessionStorage.setItem('httpsqs-auth', auth); app.replaceChildren(el('p', { class: 'legend', text: 'Signing in…' })); refresh(); } },
    el('h2', { text: 'This server needs a password' }), el('p', { class: 'legend', text: 'The one clients send as auth=.' }), ...(refused ? [el('p', { class: 'notice', role: 'alert', id: 'login-refused', text: 'That password was not accepted.' })] : []), el('div', { class: 'toolbar' }, input, el('button', {}, 'Sign in'))));
  input.focus();
}

/** The queue the page shows: #/q/<name>, or #/b/<name64> for a name that is not UTF-8. */
function route() {
  const m = /^#\/([qb])\/(.*)$/.exec(location.hash);
  if (!m) return null;
  if (m[1] === 'q') return { name: decodeURIComponent(m[2]) };
  const name64 = decodeURIComponent(m[2]);
  return queues.find((q) => q.name64 === name64) ?? { name: b64text(name64), name64 };
}

/** A link, button or input told apart from the rest (tag, id, link, text), so that a redraw can give
 * the keyboard focus back to its new self: someone moving through the page with Tab keeps their
 * place, and someone typing into the search box (which redraws as it goes) keeps typing. */
const focusKey = (e) => [e.tagName, e.id, e.getAttribute('href'), e.textContent].join('\n');

async function render(byTimer = false) {
  const had = document.activeElement;
  const key = had && /^(A|BUTTON|INPUT)$/.test(had.tagName) && app.contains(had) ? focusKey(had) : null;
  // The caret too, in a text box (a number box has none: null).
  const caret = had?.tagName === 'INPUT' && had.selectionStart !== null ? [had.selectionStart, had.selectionEnd] : null;
  const q = route();
  if (q === null) renderOverview(); else await renderQueue(q, byTimer);
  if (key && !app.contains(document.activeElement)) {
    const again = [...app.querySelectorAll('a, button, input')].find((e) => focusKey(e) === key);
    again?.focus({ preventScroll: true });
    if (again && caret) again.setSelectionRange(caret[0], caret[1]);
  }
}

/** A dashboard path's JSON; null when the password is wrong (the queue calls then ask for it). */
async function dashboardJson(path) {
  return fetchWithin(path + (auth ? '?auth=' + encodeURIComponent(auth) : ''), {}, (r) => {
    if (r.status === 401) return null;
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  });
}

/** The dot: grey until the server first answers, then green, or red while it does not. While
 * red it says so in words too, and since when: the numbers on the page are the last ones known. */
let staleSince = null;
function live(state, title) {
  const dot = document.getElementById('live');
  dot.className = state;
  dot.title = title;
  staleSince = state === 'stale' ? (staleSince ?? new Date()) : null;
  dot.textContent = staleSince ? '● no answer since ' + staleSince.toLocaleTimeString() : '●';
}

/** Someone types into a form on the page (the search box re-renders as it goes): it is not redrawn. */
const typing = () => document.activeElement && document.activeElement.tagName === 'INPUT' && document.activeElement.id !== 'search' && app.contains(document.activeElement);
/** A press (mouse, finger, pen) is under way: a redraw would take its element away before the
 * release, and the click it makes would be lost. Released, the click comes in the same task. */
let pressing = false;
addEventListener('pointerdown', () => { pressing = true; }, true);
for (const end of ['pointerup', 'pointercancel']) addEventListener(end, () => { pressing = false; }, true);
// A window that loses the focus mid-press may never hear of the release. (Not captured: the blur of
// an element, such as the one a press takes the focus from, does not bubble up to here.)
addEventListener('blur', () => { pressing = false; });
/** The page is not redrawn under someone's hands. */
const held = () => typing() || pressing;
/** Text selected on the page, to be copied: a redraw would take the selection away, so the
 * refreshes that come by themselves leave the page as it is until it goes (what the user does
 * still redraws it). */
const selecting = () => { const s = getSelection(); return !!s && !s.isCollapsed && app.contains(s.anchorNode); };
/** Whether a refresh (by the timer, or for something the user did) leaves the page as it is. */
const leaveAsIs = (byTimer) => held() || (byTimer && selecting());

let busy = false;
async function refresh(byTimer = false) {
  clearTimeout(timer);
  if (busy) return;
  busy = true;
  try {
    const [f, h, list] = await Promise.all([dashboardJson('/dashboard/info'), dashboardJson('/dashboard/history'), loadAll()]);
    facts = f ?? facts;
    if (h) {
      serverHistory = h;
      tracked = new Map(h.queues.map((q) => [keyOf(q), q]));
    }
    queues = list;
    record(queues);
    showFacts();
    if (!leaveAsIs(byTimer)) await render(byTimer);
    live('', 'live');
  } catch (err) {
    if (err instanceof AuthNeeded) { busy = false; return showLogin(); }
    live('stale', 'no answer from the server: trying again');
    if (!facts) document.getElementById('facts').textContent = 'no answer from the server: trying again…';
  } finally {
    busy = false;
  }
  timer = setTimeout(() => refresh(true), queues.length > 1000 ? 3000 : 1000);
}

addEventListener('hashchange', () => { msgPage = null; notice = null; refresh(); });
refresh();
</script>
</body>
</html>
`;
