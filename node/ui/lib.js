// Shared helpers of the console: DOM building (never innerHTML, so API text cannot inject
// markup), the API call with the session cookie and CSRF token, the error shape shown
// readably, forms, a confirmation dialog and SVG charts drawn here (no libraries).

export const session = { me: null, onSignedOut: () => {} };
const alertBox = () => document.getElementById('alert');
const SVG = 'http://www.w3.org/2000/svg';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `the server answered ${status}`);
    this.status = status;
    this.code = e.code || `http_${status}`;
    this.fields = e.fields || [];
    this.requestId = e.request_id;
  }
}

function cookie(name) {
  const hit = document.cookie.split(';').map((c) => c.trim().split('=')).find(([k]) => k === name);
  return hit ? hit[1] : '';
}

// The highest log index this tab has seen (`X-Panal-Index` of writes and reads), sent with
// every request: a read served by any node then waits until that node has applied it, so
// the order just placed is found wherever the next request lands (session consistency).
let seenIndex = Number(sessionStorage.getItem('panal-index')) || 0;

// `body` is sent as JSON, or as it is with `contentType` (CSV uploads).
export async function api(method, path, body, contentType) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = cookie('panal_csrf');
  if (seenIndex > 0) headers['x-panal-index'] = String(seenIndex);
  let payload;
  if (body !== undefined) {
    headers['content-type'] = contentType || 'application/json';
    payload = contentType ? body : JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, credentials: 'same-origin', body: payload });
  const index = Number(resp.headers.get('x-panal-index'));
  if (index > seenIndex) {
    seenIndex = index;
    sessionStorage.setItem('panal-index', String(index));
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    if (data && data.error && data.error.code === 'index_ahead' && seenIndex > 0) {
      // An index from another cluster (this tab outlived a fresh one): forget it, ask again.
      seenIndex = 0;
      sessionStorage.removeItem('panal-index');
      return api(method, path, body, contentType);
    }
    const err = new ApiError(resp.status, data);
    if (resp.status === 401 && session.me && path !== '/ui/session') {
      session.me = null;
      session.onSignedOut();
    }
    throw err;
  }
  return data;
}

export function clearError(form) {
  const box = alertBox();
  box.hidden = true;
  box.replaceChildren();
  if (form) {
    form.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
    form.querySelectorAll('.field-error').forEach((e) => e.remove());
  }
}

// Shows an API error the way the error shape describes it: the message, its code, and
// each bad field next to its input (or listed, for fields such as CSV lines).
export function showError(err, form) {
  clearError(form);
  const box = alertBox();
  const fields = err.fields || [];
  box.append(h('strong', {}, err.message), ' ', h('span', { class: 'code' }, `(${err.code || 'error'})`));
  if (fields.length) box.append(h('ul', { id: 'alert-fields' }, fields.map((f) => h('li', {}, h('strong', {}, f.field), `: ${f.message}`))));
  if (err.requestId) box.append(h('div', { class: 'code' }, `request ${err.requestId}`));
  box.hidden = false;
  box.scrollIntoView({ block: 'nearest' }); // a form far down the page still shows why it failed
  for (const f of fields) {
    const input = form && form.querySelector(`[name="${CSS.escape(f.field)}"]`);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.closest('label').append(h('span', { class: 'field-error' }, f.message));
    }
  }
  if (!(err instanceof ApiError)) console.error(err);
}

// Disables a form while its request runs; errors land in the alert box.
export function submitter(form, action) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    clearError(form);
    try {
      await action(new FormData(form));
    } catch (err) {
      showError(err, form);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export function input(label, attrs) {
  return h('label', {}, label, h('input', attrs));
}

export function select(label, attrs, options, selected) {
  return h('label', {}, label, h('select', attrs, options.map(([value, text]) =>
    h('option', { value, selected: value === selected }, text))));
}

export function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text);
}

export function statusBadge(status) {
  const bad = ['expired', 'payment_declined', 'failed'].includes(status);
  const good = ['paid', 'shipped', 'in_transit', 'delivered', 'running'].includes(status);
  return h('span', { class: `badge ${bad ? 'bad' : good ? 'good' : ''}`, 'data-status': status }, status.replace(/_/g, ' '));
}

export function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(rfc3339) {
  return new Date(rfc3339).toLocaleString();
}

export function table(id, headings, rows) {
  return h('div', { class: 'table-wrap' }, h('table', { id },
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

export function show(title, ...content) {
  document.title = `${title} · Panal`;
  const heading = h('h1', { tabindex: '-1' }, title);
  document.getElementById('main').replaceChildren(heading, ...content);
  heading.focus(); // keyboard and screen-reader users start at the new page's title
}

export function needSignIn() {
  if (session.me) return false;
  location.hash = '#/login?next=' + encodeURIComponent(location.hash);
  return true;
}

// A modal confirmation (keyboard: focus starts on Cancel, Escape cancels). Resolves true
// when confirmed.
export function confirmAction(question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { id: 'confirm', 'aria-labelledby': 'confirm-question' },
      h('p', { id: 'confirm-question' }, question));
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    const cancel = h('button', { type: 'button', class: 'secondary', id: 'confirm-no', onclick: () => done(false) }, 'Cancel');
    dialog.append(h('div', { class: 'pager' }, cancel,
      h('button', { type: 'button', id: 'confirm-yes', onclick: () => done(true) }, confirmLabel)));
    dialog.addEventListener('cancel', (ev) => { ev.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

// ---- Charts --------------------------------------------------------------------------
// A line chart over time: `series` are { name, cls, points: [[ms, value]] }, `bands` are
// { cls, points: [[ms, low, high]] } drawn beneath. Axes show the time span and the value
// range; the SVG scales with its container.

const PAD = { l: 46, r: 8, t: 8, b: 22 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

// `width`/`height` set the drawing's own units: a small chart in a narrow card uses fewer,
// so its labels stay readable when scaled down.
export function timeChart({ label, series, bands = [], unit = '', max, from, to, bars = false, width: W = 600, height: H = 200 }) {
  const all = series.flatMap((x) => x.points).concat(bands.flatMap((b) => b.points.map(([t, , hi]) => [t, hi])));
  const times = all.map((p) => p[0]);
  const t0 = from ?? Math.min(...times);
  const t1 = Math.max(to ?? Math.max(...times), t0 + 1);
  const top = max ?? niceMax(Math.max(0, ...all.map((p) => p[1])));
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (Math.max(0, Math.min(v, top)) / top) * (H - PAD.t - PAD.b);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
  const fmt = (v) => `${+v.toFixed(v < 10 ? 2 : Number.isInteger(v) ? 0 : 1)}${unit}`;
  for (const v of [0, top / 2, top]) {
    svg.append(s('line', { class: 'gridline', x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }),
      s('text', { x: PAD.l - 4, y: y(v) + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  const span = t1 - t0;
  const tfmt = (t) => (span > 2 * 86400000 ? new Date(t).toLocaleDateString() : new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  svg.append(s('text', { x: PAD.l, y: H - 6 }, all.length ? tfmt(t0) : ''),
    s('text', { x: W - PAD.r, y: H - 6, 'text-anchor': 'end' }, all.length ? tfmt(t1) : ''));
  for (const b of bands) {
    if (!b.points.length) continue;
    const upper = b.points.map(([t, , hi]) => `${x(t).toFixed(1)},${y(hi).toFixed(1)}`);
    const lower = b.points.slice().reverse().map(([t, lo]) => `${x(t).toFixed(1)},${y(lo).toFixed(1)}`);
    svg.append(s('polygon', { class: `band ${b.cls}`, points: upper.concat(lower).join(' ') }));
  }
  series.forEach((line, i) => {
    if (bars) {
      // Side by side: each bucket's slot is shared by the series.
      const slot = ((W - PAD.l - PAD.r) / Math.max(line.points.length, 1)) * 0.8;
      const width = Math.max(1, slot / series.length);
      for (const [t, v] of line.points) {
        svg.append(s('rect', { class: `bar ${line.cls}`, x: x(t) - slot / 2 + i * width, y: y(v), width, height: H - PAD.b - y(v) },
          s('title', {}, `${tfmt(t)}: ${fmt(v)}`)));
      }
    } else {
      svg.append(s('polyline', { class: `line ${line.cls}`, points: line.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ') }));
    }
  });
  const legend = series.map((l) => h('span', { class: `key ${l.cls}` }, l.name))
    .concat(bands.map((b) => h('span', { class: `key ${b.cls}` }, b.name)));
  return h('figure', { class: 'chart-box' }, svg, h('figcaption', {}, legend));
}
