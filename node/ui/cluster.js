// The cluster page (admin): nodes with their Raft state, availability and labels; services
// with desired and running tasks, where they run and each one's health per node; actions
// (drain/activate a node, edit its labels, scale a service or make it global again, edit
// its placement constraints, rotate a join token) behind a confirmation; API errors shown.
// The tables refresh every 2 s; live metrics come from the SSE stream, with the last hour
// of history loaded first.

import {
  api, ApiError, badge, bytes, clearError, confirmAction, h, show, showError, statusBadge, table, timeChart,
} from './lib.js';

const REFRESH_MS = 2000;
// A sample's request figures (absent from samples of nodes older than this console).
const req = (sample) => sample.requests || { per_second: 0, mean_latency_ms: 0 };
const HOUR_MS = 3600 * 1000;

// Updates a table body row by row, keyed, so that a button or input inside a row keeps its
// focus and what is typed in it across refreshes. `cells(item)` gives the data cells,
// redrawn each time; each of `stable` (optional) makes its last cells once (`create`) and
// then only updates them (`update`).
function syncRows(tbody, items, { key, attrs, cells, stable = [] }) {
  const seen = new Set();
  for (const item of items) {
    const k = String(key(item));
    seen.add(k);
    const data = cells(item);
    let row = [...tbody.children].find((r) => r.dataset.key === k);
    if (!row) {
      row = h('tr', { 'data-key': k }, data.map(() => h('td')), stable.map((col) => h('td', { class: col.cls || null }, col.create(item))));
      tbody.append(row);
    }
    data.forEach((c, i) => row.children[i].replaceChildren(...[c].flat().map((x) => (x instanceof Node ? x : String(x)))));
    for (const [name, value] of Object.entries(attrs ? attrs(item) : {})) row.setAttribute(`data-${name}`, value);
    stable.forEach((col, i) => col.update(row.children[data.length + i], item));
  }
  for (const row of [...tbody.children]) if (!seen.has(row.dataset.key)) row.remove();
}

// An editable list of chips (node labels, placement constraints): each chip has a remove
// button, a one-field form adds one. `remove(text)` and `add(text)` ask for confirmation
// and call the API; the chips are redrawn only when the list changes, so focus survives
// the 2 s refresh.
function chipEditor({ kind, field, placeholder, label, add, remove }) {
  const list = h('ul', { class: 'chips' });
  const form = h('form', { class: `inline compact chip-form ${kind}-form` },
    h('label', {}, h('span', { class: 'sr-only' }, label),
      h('input', { name: field, placeholder, required: true, size: placeholder.length, autocomplete: 'off', spellcheck: 'false' })),
    h('button', { type: 'submit', class: 'secondary' }, 'Add'));
  const box = h('div', { class: 'chip-editor' }, list, form);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = form.elements[field].value.trim();
    add(text, () => { form.reset(); });
  });
  box.draw = (chips) => {
    const sig = JSON.stringify(chips);
    if (box.dataset.sig === sig) return;
    box.dataset.sig = sig;
    const hadFocus = list.contains(document.activeElement);
    list.replaceChildren(...(chips.length ? chips.map((text) => h('li', {},
      h('code', { class: 'label' }, text),
      h('button', { type: 'button', class: 'chip-rm', 'aria-label': `Remove ${kind} ${text}`, title: `Remove ${text}`,
        onclick: () => remove(text, () => form.elements[field].focus()) }, '×'))) : [h('li', { class: 'muted' }, 'none')]));
    if (hadFocus) form.elements[field].focus(); // the chip that had focus was removed
  };
  return box;
}

async function act(question, label, action, done) {
  if (!(await confirmAction(question, label))) return;
  clearError();
  try {
    await action();
    if (done) await done();
  } catch (err) {
    showError(err);
  }
}

export async function clusterView(setLeave, me) {
  if (me.role !== 'admin') throw new ApiError(403, { error: { code: 'forbidden', message: 'the cluster page needs the admin role' } });
  const summary = h('p', { id: 'cluster-summary' }, 'Asking every node…');
  const nodesBody = h('tbody');
  const servicesBody = h('tbody');
  const health = h('div', { class: 'table-wrap', id: 'health-wrap' });
  const tokenOut = h('div', { id: 'token-out', 'aria-live': 'polite' });
  const metrics = h('ul', { class: 'grid wide', id: 'metrics' });
  const liveNote = h('p', { class: 'muted', id: 'live-note' }, 'Connecting to the live stream…');
  const rotate = (role) => h('button', { type: 'button', class: 'secondary', id: `rotate-${role}`, onclick: () => act(
    `Rotate the ${role} join token? The current one stops working at once.`, 'Rotate', async () => {
      const r = await api('POST', `/api/v1/cluster/tokens/${role}/rotate`);
      tokenOut.replaceChildren(h('p', {}, `New ${r.role} token: `, h('code', { class: 'token' }, r.token)));
    }) }, `Rotate ${role} token`);
  show('Cluster', summary,
    h('h2', {}, 'Nodes'),
    h('div', { class: 'table-wrap' }, h('table', { id: 'nodes' }, h('thead', {}, h('tr', {},
      ['Node', 'Id', 'Role', 'Raft state', 'Term', 'Applied', 'Reachable', 'Availability', 'Tasks', 'Labels', 'Action']
        .map((t) => h('th', { scope: 'col' }, t)))), nodesBody)),
    h('h2', {}, 'Services'),
    h('div', { class: 'table-wrap' }, h('table', { id: 'services' }, h('thead', {}, h('tr', {},
      ['Service', 'Mode', 'Desired', 'Running', 'Pending', 'Where', 'Placement constraints', 'Scale'].map((t) => h('th', { scope: 'col' }, t)))), servicesBody)),
    h('h3', {}, 'Health of each service per node'), health,
    h('h2', {}, 'Join tokens'), h('div', { class: 'pager' }, rotate('manager'), rotate('worker')), tokenOut,
    h('h2', {}, 'Live metrics'), liveNote, metrics);

  let stopped = false;
  let nodes = [];
  const refresh = async () => {
    try {
      const [status, nodeRows, services] = await Promise.all([
        api('GET', '/api/v1/cluster/status'), api('GET', '/api/v1/cluster/nodes'), api('GET', '/api/v1/services')]);
      const tasks = await Promise.all(services.map((sv) => api('GET', `/api/v1/services/${sv.name}/tasks`)));
      if (stopped) return;
      nodes = nodeRows;
      drawNodes(status, services, tasks.flat());
      drawServices(services, tasks);
      for (const n of nodes) card(n.name);
    } catch (err) {
      if (!stopped) showError(err);
    }
  };

  const nameOf = (id) => (nodes.find((n) => n.id === id) || { name: `node ${id}` }).name;

  function drawNodes(status, services, tasks) {
    const leader = status.leader ? status.leader.name : 'none';
    summary.replaceChildren(`${nodes.length} nodes · leader `, h('strong', { id: 'leader' }, leader),
      ` · term ${status.node.term ?? '?'} · ${services.length} services, ${tasks.filter((t) => t.current_state === 'running').length} tasks running`);
    syncRows(nodesBody, nodes, {
      key: (n) => n.id,
      attrs: (n) => ({
        node: n.name, id: n.id, availability: n.availability, tasks: tasks.filter((t) => t.node_id === n.id).length,
        labels: Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(','),
      }),
      cells: (n) => [
        [n.name, status.leader && status.leader.id === n.id ? h('span', { title: 'leader', class: 'leader-mark' }, ' ★ leader') : ''],
        n.id, String(n.role).toLowerCase(), n.state || '—', n.term ?? '—', n.applied_index ?? '—',
        badge(n.reachable ? 'yes' : 'no', n.reachable ? 'good' : 'bad'),
        badge(n.availability, n.availability === 'active' ? 'good' : 'warn'),
        tasks.filter((t) => t.node_id === n.id).length,
      ],
      stable: [{
        cls: 'labels',
        create: (n) => chipEditor({
          kind: 'label', field: 'label', placeholder: 'key=value', label: `New label for ${n.name} (key=value)`,
          add: (text, done) => {
            // Split at the first '='; the API says what is wrong with either half.
            const at = text.indexOf('=');
            const [k, v] = at < 0 ? [text, ''] : [text.slice(0, at).trim(), text.slice(at + 1).trim()];
            act(`Set label ${k}=${v} on ${n.name}? Placement constraints on node labels see it at once.`, 'Set label',
              () => api('PATCH', `/api/v1/cluster/nodes/${n.id}`, { label_add: { [k]: v } }), async () => { done(); await refresh(); });
          },
          remove: (text, done) => {
            const k = text.slice(0, text.indexOf('='));
            act(`Remove label ${text} from ${n.name}?`, 'Remove label',
              () => api('PATCH', `/api/v1/cluster/nodes/${n.id}`, { label_rm: [k] }), async () => { done(); await refresh(); });
          },
        }),
        update: (td, n) => td.firstElementChild.draw(Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`)),
      }, {
        cls: 'actions',
        create: (n) => h('button', { type: 'button', class: 'secondary node-action', onclick: (ev) => {
          const row = ev.target.closest('tr');
          const next = row.dataset.availability === 'drain' ? 'active' : 'drain';
          const name = row.dataset.node;
          const question = next === 'drain'
            ? `Drain ${name}? Its tasks move to the other nodes (its own metrics instance stays).` : `Activate ${name}? It takes tasks again.`;
          act(question, next === 'drain' ? 'Drain' : 'Activate',
            () => api('PATCH', `/api/v1/cluster/nodes/${n.id}`, { availability: next }), refresh);
        } }),
        update: (td, n) => {
          const b = td.firstElementChild;
          b.textContent = n.availability === 'drain' ? 'Activate' : 'Drain';
          b.setAttribute('aria-label', `${b.textContent} ${n.name}`);
        },
      }],
    });
  }

  function drawServices(services, tasks) {
    syncRows(servicesBody, services, {
      key: (sv) => sv.name,
      attrs: (sv) => ({ service: sv.name, mode: sv.spec.mode, running: sv.running, constraints: sv.spec.constraints.join(',') }),
      cells: (sv) => {
        const mine = tasks[services.indexOf(sv)];
        const where = mine.map((t) => h('span', { class: 'task', 'data-node': t.node_id == null ? '' : nameOf(t.node_id) },
          t.node_id == null ? 'unplaced' : nameOf(t.node_id), ' ', statusBadge(t.current_state),
          t.error ? h('span', { class: 'muted' }, ` ${t.error}`) : ''));
        return [sv.name, sv.spec.mode, sv.spec.mode === 'global' ? `global (${sv.assigned})` : sv.spec.replicas,
          sv.running, sv.pending, where];
      },
      stable: [{
        cls: 'constraints',
        create: (sv) => chipEditor({
          kind: 'constraint', field: 'constraint', placeholder: 'node.labels.zone==eu', label: `New placement constraint for ${sv.name}`,
          add: (text, done) => act(`Add the constraint ${text} to ${sv.name}? Its tasks then run only on nodes where it holds.`,
            'Add constraint', () => api('PATCH', `/api/v1/services/${sv.name}`, { constraint_add: [text] }), async () => { done(); await refresh(); }),
          remove: (text, done) => act(`Remove the constraint ${text} from ${sv.name}?`, 'Remove constraint',
            () => api('PATCH', `/api/v1/services/${sv.name}`, { constraint_rm: [text] }), async () => { done(); await refresh(); }),
        }),
        update: (td, sv) => td.firstElementChild.draw(sv.spec.constraints),
      }, {
        cls: 'actions',
        create: (sv) => {
          const form = h('form', { class: 'inline compact scale-form', 'data-service': sv.name },
            h('label', {}, h('span', { class: 'sr-only' }, `Tasks of ${sv.name}`),
              h('input', { name: 'replicas', type: 'number', min: 0, max: 1000, required: true, size: 4 })),
            h('button', { type: 'submit', class: 'secondary' }, 'Scale'),
            // Back to one task on every eligible node; shown while the service is replicated.
            h('button', { type: 'button', class: 'secondary make-global', hidden: true, onclick: () => act(
              `Run ${sv.name} in global mode, one task on every eligible node?`, 'Make global',
              () => api('PATCH', `/api/v1/services/${sv.name}`, { mode: 'global' }), refresh) }, 'Global'));
          form.addEventListener('submit', (ev) => {
            ev.preventDefault();
            const replicas = Number(new FormData(form).get('replicas'));
            act(`Run ${replicas} task${replicas === 1 ? '' : 's'} of ${sv.name}?`, 'Scale',
              () => api('PATCH', `/api/v1/services/${sv.name}`, { mode: 'replicated', replicas }), async () => { form.reset(); await refresh(); });
          });
          return form;
        },
        update: (td, sv) => {
          const field = td.querySelector('input');
          field.placeholder = String(sv.spec.mode === 'global' ? sv.assigned : sv.spec.replicas);
          const global = td.querySelector('.make-global');
          global.hidden = sv.spec.mode === 'global';
          global.setAttribute('aria-label', `Make ${sv.name} global`);
        },
      }],
    });
    // Each service's health on each node, as that node's own supervisors report it (asked
    // live by /api/v1/cluster/nodes), with the states of the tasks it holds there.
    health.replaceChildren(table('health', ['Service'].concat(nodes.map((n) => n.name)), services.map((sv, i) =>
      h('tr', { 'data-service': sv.name }, h('th', { scope: 'row' }, sv.name), nodes.map((n) => {
        const [state, shown] = healthOf(n, sv.name);
        const here = tasks[i].filter((t) => t.node_id === n.id);
        return h('td', { 'data-node': n.name, 'data-health': state }, shown,
          here.length ? h('div', { class: 'muted' }, `${here.length} task${here.length === 1 ? '' : 's'}: `,
            here.map((t) => t.current_state).join(', ')) : '');
      })))));
  }

  // A service's health on node `n`: [state, what to show].
  function healthOf(n, service) {
    if (!n.services) return ['unknown', badge('unknown', 'warn')]; // the node did not answer
    const x = n.services[service];
    if (!x) return ['absent', h('span', { class: 'muted' }, 'not started')];
    if (x.state === 'failed') {
      const retry = new Date(x.retry_at_ms).toLocaleTimeString();
      return ['failed', [badge('failed', 'bad'), h('div', { class: 'muted' }, `${x.reason} · retry at ${retry}`)]];
    }
    if (x.workers === 0) return ['stopped', h('span', { class: 'muted' }, 'stopped')];
    return ['running', badge(`running · ${x.workers} worker${x.workers === 1 ? '' : 's'}`, 'good')];
  }

  // ---- Live metrics --------------------------------------------------------------------
  const cards = new Map(); // node name → { el, samples (live count), points: [[ms, sample]] }
  const card = (name) => {
    if (!cards.has(name)) {
      const el = h('li', { class: 'card', 'data-node': name, 'data-samples': 0, 'data-points': 0 }, h('h3', {}, name), h('p', { class: 'muted' }, 'Loading the last hour…'));
      metrics.append(el);
      const c = { el, samples: 0, points: [], drawn: 0 };
      cards.set(name, c);
      loadHistory(name, c);
    }
    return cards.get(name);
  };
  const draw = (name) => {
    const c = card(name);
    const cutoff = Date.now() - HOUR_MS;
    while (c.points.length && c.points[0][0] < cutoff) c.points.shift();
    const last = c.points[c.points.length - 1];
    if (!last) return;
    // The last hour, or as much of it as this node has (a new node has less).
    const since = Math.max(Date.now() - HOUR_MS, c.points[0][0]);
    const s = last[1];
    const p = s.processes;
    const states = [['running', p.running], ['sleeping', p.sleeping], ['disk sleep', p.disk_sleep], ['stopped', p.stopped],
      ['zombie', p.zombie], ['idle', p.idle]];
    c.el.setAttribute('data-samples', c.samples);
    c.el.setAttribute('data-points', c.points.length);
    c.el.replaceChildren(h('h3', {}, name),
      timeChart({
        label: `${name}: CPU and memory use over the last hour`, unit: '%', max: 100, width: 320, height: 130, from: since, to: Date.now(),
        series: [
          { name: 'CPU %', cls: 's1', points: c.points.map(([t, x]) => [t, x.cpu_busy_pct]) },
          { name: 'Memory %', cls: 's2', points: c.points.map(([t, x]) => [t, (100 * x.mem_used_bytes) / Math.max(x.mem_total_bytes, 1)]) },
        ],
      }),
      timeChart({
        label: `${name}: requests per second over the last hour`, width: 320, height: 110, from: since, to: Date.now(),
        series: [{ name: 'Requests/s', cls: 's3', points: c.points.map(([t, x]) => [t, req(x).per_second]) }],
      }),
      timeChart({
        label: `${name}: mean request latency over the last hour`, unit: ' ms', width: 320, height: 110, from: since, to: Date.now(),
        series: [{ name: 'Mean latency ms', cls: 's1', points: c.points.map(([t, x]) => [t, req(x).mean_latency_ms]) }],
      }),
      h('dl', { class: 'facts' },
        h('dt', {}, 'CPU'), h('dd', {}, `${s.cpu_busy_pct.toFixed(1)} % of ${s.cpu_count} · load ${s.load1.toFixed(2)}`),
        h('dt', {}, 'Memory'), h('dd', {}, `${bytes(s.mem_used_bytes)} of ${bytes(s.mem_total_bytes)} · panal ${bytes(s.process_rss_bytes)}`),
        h('dt', {}, 'Requests'), h('dd', { class: 'requests' }, `${req(s).per_second.toFixed(1)}/s · mean ${req(s).mean_latency_ms.toFixed(1)} ms`),
        h('dt', {}, 'Processes'), h('dd', { class: 'procs' }, `${p.total} (${p.threads} threads): `,
          states.map(([k, v]) => h('span', {}, `${k} ${v}`)).reduce((a, b) => (a.length ? [...a, ', ', b] : [b]), [])),
        h('dt', {}, 'Counted by'), h('dd', { class: 'source' }, s.source === 'module' ? 'the kernel module (/proc/panal_procs)' : 'a /proc scan')),
      h('div', { class: 'muted' }, `${c.points.length} samples in the last hour · updated ${new Date(s.ts_ms).toLocaleTimeString()}`));
  };
  async function loadHistory(name, c) {
    try {
      const history = await api('GET', `/api/v1/metrics/nodes/${encodeURIComponent(name)}/history?step=5`);
      if (stopped) return;
      const first = c.points.length ? c.points[0][0] : Infinity;
      c.points = history.filter((v) => v.sample.ts_ms < first).map((v) => [v.sample.ts_ms, v.sample]).concat(c.points);
      draw(name);
    } catch (err) {
      if (!stopped) c.el.replaceChildren(h('h3', {}, name), h('p', { class: 'muted' }, `No history: ${err.message}`));
    }
  }

  const timer = setInterval(refresh, REFRESH_MS);
  const source = new EventSource('/api/v1/metrics/stream', { withCredentials: true });
  // Set before the first await, so leaving the page early still stops the timer and stream.
  setLeave(() => { stopped = true; clearInterval(timer); source.close(); });
  source.addEventListener('open', () => { liveNote.textContent = 'Live: new samples every second or so; charts show the last hour.'; });
  source.addEventListener('error', () => { liveNote.textContent = 'The live stream is reconnecting…'; });
  source.addEventListener('sample', (ev) => {
    const view = JSON.parse(ev.data);
    const c = card(view.node);
    c.samples += 1;
    c.points.push([view.sample.ts_ms, view.sample]);
    draw(view.node);
  });
  await refresh();
}
