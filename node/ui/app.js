// The Panal web console: a small single-page app over the public API, served by every node.
// No framework, no build step: DOM built with h() (never innerHTML, so API text cannot
// inject markup), hash routes, the session in an HttpOnly cookie set by POST /ui/session.

const main = document.getElementById('main');
const alertBox = document.getElementById('alert');
let me = null; // the signed-in account, or null
let leaveView = () => {}; // stops the current view's timers and streams

// ---- DOM and API helpers -------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
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

async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = cookie('panal_csrf');
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(path, {
    method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data);
    if (resp.status === 401 && me && path !== '/ui/session') {
      me = null;
      renderHeader();
      location.hash = '#/login?next=' + encodeURIComponent(location.hash);
    }
    throw err;
  }
  return data;
}

function clearError(form) {
  alertBox.hidden = true;
  alertBox.replaceChildren();
  if (form) {
    form.querySelectorAll('[aria-invalid]').forEach((i) => i.removeAttribute('aria-invalid'));
    form.querySelectorAll('.field-error').forEach((e) => e.remove());
  }
}

// Shows an API error the way the error shape describes it: the message, its code, and
// each bad field next to its input.
function showError(err, form) {
  clearError(form);
  const fields = err.fields || [];
  alertBox.append(h('strong', {}, err.message), ' ', h('span', { class: 'muted' }, `(${err.code || 'error'})`));
  if (fields.length) alertBox.append(h('ul', {}, fields.map((f) => h('li', {}, `${f.field}: ${f.message}`))));
  alertBox.hidden = false;
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
function submitter(form, action) {
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

function input(label, attrs) {
  return h('label', {}, label, h('input', attrs));
}

function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function statusBadge(status) {
  const bad = ['expired', 'payment_declined'].includes(status);
  const good = ['paid', 'shipped', 'in_transit', 'delivered'].includes(status);
  return h('span', { class: `badge ${bad ? 'bad' : good ? 'good' : ''}`, 'data-status': status }, status.replace(/_/g, ' '));
}

function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function show(title, ...content) {
  document.title = `${title} · Panal`;
  const heading = h('h1', { tabindex: '-1' }, title);
  main.replaceChildren(heading, ...content);
  heading.focus(); // keyboard and screen-reader users start at the new page's title
}

function needSignIn() {
  if (me) return false;
  location.hash = '#/login?next=' + encodeURIComponent(location.hash);
  return true;
}

// ---- Header ----------------------------------------------------------------------------

function renderHeader() {
  const who = document.getElementById('who');
  document.querySelectorAll('[data-auth]').forEach((a) => { a.hidden = !me; });
  document.querySelectorAll('[data-admin]').forEach((a) => { a.hidden = !me || me.role !== 'admin'; });
  if (me) {
    who.replaceChildren(
      h('span', { id: 'signed-in-as' }, `${me.username} (${me.role})`),
      h('button', { type: 'button', class: 'secondary', id: 'sign-out', onclick: signOut }, 'Sign out'),
    );
  } else {
    who.replaceChildren(h('a', { href: '#/login', id: 'sign-in-link' }, 'Sign in'));
  }
  const route = location.hash.split('?')[0].split('/')[1] || 'books';
  document.querySelectorAll('#nav a').forEach((a) => {
    if (a.getAttribute('href') === `#/${route}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
}

async function signOut() {
  try {
    await api('DELETE', '/ui/session');
  } catch (err) {
    if (err.status !== 401) return showError(err);
  }
  me = null;
  location.hash = '#/login';
  renderHeader();
}

// ---- Views -----------------------------------------------------------------------------

function loginView(params) {
  const form = submitter(h('form', { id: 'login-form' },
    input('Username', { name: 'username', autocomplete: 'username', required: true }),
    input('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit' }, 'Sign in')), async (data) => {
    await api('POST', '/ui/session', { username: data.get('username'), password: data.get('password') });
    me = await api('GET', '/api/v1/auth/me');
    const next = params.get('next');
    location.hash = next && next.startsWith('#/') && !next.startsWith('#/login') ? next : '#/books';
  });
  show('Sign in', form);
  form.querySelector('input').focus();
}

let cursorStack = []; // cursors of the pages before the current one, for "Previous"

async function booksView(params) {
  const q = params.get('q') || '';
  const cursor = params.get('cursor') || '';
  const query = new URLSearchParams({ limit: '6' });
  if (q) query.set('q', q);
  if (cursor) query.set('cursor', cursor);
  const page = await api('GET', `/api/v1/books?${query}`);
  const search = h('form', { class: 'inline', role: 'search', id: 'search-form' },
    input('Search books', { name: 'q', type: 'search', value: q, placeholder: 'title, author or words' }),
    h('button', { type: 'submit' }, 'Search'));
  search.addEventListener('submit', (ev) => {
    ev.preventDefault();
    cursorStack = [];
    location.hash = `#/books?q=${encodeURIComponent(new FormData(search).get('q'))}`;
  });
  const list = h('ul', { class: 'grid', id: 'books' }, page.items.map((b) => h('li', { class: 'card' },
    h('h2', {}, h('a', { href: `#/books/${b.id}` }, b.title)),
    h('div', {}, b.author),
    h('div', { class: 'muted' }, `${money(b.price_cents, b.currency)} · ${b.stock} in stock`))));
  const pager = h('div', { class: 'pager' });
  if (cursor) {
    pager.append(h('button', { type: 'button', class: 'secondary', onclick: () => {
      const prev = cursorStack.pop() || '';
      location.hash = `#/books?q=${encodeURIComponent(q)}${prev ? `&cursor=${encodeURIComponent(prev)}` : ''}`;
    } }, 'Previous'));
  }
  if (page.next_cursor) {
    pager.append(h('button', { type: 'button', id: 'next-page', onclick: () => {
      cursorStack.push(cursor);
      location.hash = `#/books?q=${encodeURIComponent(q)}&cursor=${encodeURIComponent(page.next_cursor)}`;
    } }, 'Next'));
  }
  show(q ? `Books matching “${q}”` : 'Books', search,
    page.items.length ? list : h('p', {}, 'No books match.'), pager);
}

async function bookView(id) {
  const b = await api('GET', `/api/v1/books/${id}`);
  const buy = submitter(h('form', { class: 'inline', id: 'buy-form' },
    input('Quantity', { name: 'quantity', type: 'number', min: 1, max: Math.max(b.stock, 1), value: 1, required: true }),
    h('button', { type: 'submit' }, 'Buy')), async (data) => {
    if (needSignIn()) return;
    const order = await api('POST', '/api/v1/orders', { book_id: b.id, quantity: Number(data.get('quantity')) });
    location.hash = `#/orders/${order.id}`;
  });
  show(b.title,
    h('p', {}, `by ${b.author} · sold by ${b.seller}`),
    h('p', {}, b.description),
    h('p', {}, h('strong', {}, money(b.price_cents, b.currency)), ` · ${b.stock} in stock`),
    b.stock > 0 ? buy : h('p', {}, 'Out of stock.'),
    h('p', {}, h('a', { href: '#/books' }, '← All books')));
}

async function ordersView(params) {
  if (needSignIn()) return;
  const cursor = params.get('cursor') || '';
  const page = await api('GET', `/api/v1/orders?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
  const rows = page.items.map((o) => h('tr', {},
    h('td', {}, h('a', { href: `#/orders/${o.id}` }, `#${o.id}`)), h('td', {}, o.book_title),
    h('td', {}, o.quantity), h('td', {}, money(o.total_cents, o.currency)), h('td', {}, statusBadge(o.status))));
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'orders' },
    h('thead', {}, h('tr', {}, ['Order', 'Book', 'Qty', 'Total', 'Status'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
  const pager = page.next_cursor
    ? h('div', { class: 'pager' }, h('a', { class: 'button', href: `#/orders?cursor=${encodeURIComponent(page.next_cursor)}` }, 'Next'))
    : null;
  show('My orders', page.items.length ? table : h('p', {}, 'No orders yet.'), pager);
}

async function orderView(id, notice) {
  if (needSignIn()) return;
  const o = await api('GET', `/api/v1/orders/${id}`);
  const parts = [
    h('p', {}, `${o.quantity} × ${o.book_title} · ${money(o.total_cents, o.currency)} · `, statusBadge(o.status)),
  ];
  if (notice) parts.push(h('p', { class: 'success', role: 'status', id: 'notice' }, notice));
  if (o.status === 'pending_payment') {
    const pay = submitter(h('form', { id: 'pay-form' },
      h('p', { class: 'muted' }, `Reserved until ${new Date(o.reserved_until).toLocaleString()}. Test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined.`),
      input('Card number', { name: 'card_number', inputmode: 'numeric', autocomplete: 'cc-number', required: true }),
      input('Expiry (MM/YY)', { name: 'expiry', autocomplete: 'cc-exp', placeholder: 'MM/YY', required: true }),
      input('CVC', { name: 'cvc', inputmode: 'numeric', autocomplete: 'cc-csc', required: true }),
      h('button', { type: 'submit' }, `Pay ${money(o.total_cents, o.currency)}`)), async (data) => {
      await api('POST', `/api/v1/orders/${o.id}/pay`, Object.fromEntries(data));
      await orderView(o.id, 'Payment accepted. Thank you!');
    });
    parts.push(pay);
  }
  if (o.invoice_number != null) {
    parts.push(h('p', {}, h('a', { href: `/api/v1/orders/${o.id}/invoice`, id: 'invoice-link' }, `Invoice ${o.invoice_number}`),
      h('span', { class: 'muted' }, ' (opens the printable invoice)')));
  }
  parts.push(h('h2', {}, 'History'), h('div', { class: 'table-wrap' }, h('table', { id: 'history' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'When'), h('th', { scope: 'col' }, 'Event'), h('th', { scope: 'col' }, 'Note'))),
    h('tbody', {}, o.history.map((e) => h('tr', {},
      h('td', {}, new Date(e.at).toLocaleString()), h('td', {}, statusBadge(e.event)), h('td', {}, e.note || '')))))));
  show(`Order #${o.id}`, ...parts);
}

// Live metrics: one card per node, fed by the SSE stream, with a CPU sparkline.
function sparkline(points) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 120 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `CPU busy over the last ${points.length} samples`);
  const line = document.createElementNS(svg.namespaceURI, 'polyline');
  const step = points.length > 1 ? 120 / (points.length - 1) : 0;
  line.setAttribute('points', points.map((p, i) => `${(i * step).toFixed(1)},${(40 - (p / 100) * 38).toFixed(1)}`).join(' '));
  svg.append(line);
  return svg;
}

async function clusterView() {
  if (needSignIn()) return;
  if (me.role !== 'admin') throw new ApiError(403, { error: { code: 'forbidden', message: 'the cluster page needs the admin role' } });
  const summary = h('p', { id: 'cluster-summary' }, 'Asking every node…');
  const tbody = h('tbody');
  const metrics = h('ul', { class: 'grid', id: 'metrics' });
  const liveNote = h('p', { class: 'muted', id: 'live-note' }, 'Connecting to the live stream…');
  show('Cluster', summary,
    h('div', { class: 'table-wrap' }, h('table', { id: 'nodes' },
      h('thead', {}, h('tr', {}, ['Node', 'Id', 'Role', 'Raft state', 'Term', 'Applied index', 'Reachable']
        .map((t) => h('th', { scope: 'col' }, t)))), tbody)),
    h('h2', {}, 'Live metrics'), liveNote, metrics);

  let stopped = false;
  const cards = new Map(); // node name → { samples, cpu: [] }
  const card = (name) => {
    if (!cards.has(name)) {
      const el = h('li', { class: 'card', 'data-node': name, 'data-samples': 0 });
      metrics.append(el);
      cards.set(name, { el, samples: 0, cpu: [] });
    }
    return cards.get(name);
  };
  const draw = (name, s) => {
    const c = card(name);
    c.samples += 1;
    c.cpu.push(s.cpu_busy_pct);
    if (c.cpu.length > 120) c.cpu.shift();
    c.el.setAttribute('data-samples', c.samples);
    const p = s.processes;
    c.el.replaceChildren(h('h3', {}, name), sparkline(c.cpu),
      h('div', {}, `CPU ${s.cpu_busy_pct.toFixed(1)} % of ${s.cpu_count} · load ${s.load1.toFixed(2)}`),
      h('div', {}, `Memory ${bytes(s.mem_used_bytes)} of ${bytes(s.mem_total_bytes)} · panal RSS ${bytes(s.process_rss_bytes)}`),
      h('div', {}, `Processes ${p.total} (${p.running} running, ${p.sleeping} sleeping, ${p.zombie} zombie) · from ${s.source === 'module' ? 'the kernel module' : 'a /proc scan'}`),
      h('div', { class: 'muted' }, `Updated ${new Date(s.ts_ms).toLocaleTimeString()}`));
  };

  const refresh = async () => {
    try {
      const [status, nodes] = await Promise.all([api('GET', '/api/v1/cluster/status'), api('GET', '/api/v1/cluster/nodes')]);
      if (stopped) return;
      const leader = status.leader ? status.leader.name : 'none';
      summary.replaceChildren(`${nodes.length} nodes · leader `, h('strong', { id: 'leader' }, leader),
        ` · term ${status.node.term ?? '?'}`);
      tbody.replaceChildren(...nodes.map((n) => h('tr', { 'data-node': n.name },
        h('td', {}, n.name, n.leader === n.id && n.state ? ' ★' : ''), h('td', {}, n.id), h('td', {}, String(n.role).toLowerCase()),
        h('td', {}, n.state || '—'), h('td', {}, n.term ?? '—'), h('td', {}, n.applied_index ?? '—'),
        h('td', {}, h('span', { class: `badge ${n.reachable ? 'good' : 'bad'}` }, n.reachable ? 'yes' : 'no')))));
      for (const n of nodes) card(n.name);
    } catch (err) {
      if (!stopped) showError(err);
    }
  };
  const timer = setInterval(refresh, 3000);
  const source = new EventSource('/api/v1/metrics/stream', { withCredentials: true });
  // Set before the first await, so leaving the page early still stops the timer and stream.
  leaveView = () => { stopped = true; clearInterval(timer); source.close(); };
  source.addEventListener('open', () => { liveNote.textContent = 'Live: new samples every second or so.'; });
  source.addEventListener('error', () => { liveNote.textContent = 'The live stream is reconnecting…'; });
  source.addEventListener('sample', (ev) => {
    const view = JSON.parse(ev.data);
    draw(view.node, view.sample);
  });
  await refresh();
}

// ---- Router ----------------------------------------------------------------------------

async function route() {
  leaveView();
  leaveView = () => {};
  clearError();
  const [path, query] = (location.hash.slice(1) || '/books').split('?');
  const params = new URLSearchParams(query || '');
  const seg = path.split('/').filter(Boolean);
  renderHeader();
  try {
    if (seg[0] === 'login') return loginView(params);
    if (seg[0] === 'orders' && seg[1]) return await orderView(seg[1]);
    if (seg[0] === 'orders') return await ordersView(params);
    if (seg[0] === 'cluster') return await clusterView();
    if (seg[0] === 'books' && seg[1]) return await bookView(seg[1]);
    return await booksView(params);
  } catch (err) {
    show('Something went wrong', h('p', {}, h('a', { href: '#/books' }, 'Back to the books')));
    showError(err);
  }
}

async function start() {
  try {
    me = await api('GET', '/api/v1/auth/me');
  } catch {
    me = null; // not signed in, or the session ended
  }
  window.addEventListener('hashchange', route);
  await route();
  performance.mark('panal-ready'); // first view rendered: what the load budget measures
  document.body.dataset.ready = 'true'; // the browser test waits for this
}

start();
