// Energy (device owners): devices, the readings chart by hour, day or month, the summary
// with self-sufficiency, the forecast with its 80 % and 95 % bands and backtest error, and
// for a battery the CSV upload (line and column errors listed) and its chart.

import {
  api, h, input, needSignIn, select, show, submitter, table, timeChart, when,
} from './lib.js';

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
// How far back each bucket's chart reaches.
const SPAN = { hour: 7 * DAY, day: 90 * DAY, month: 730 * DAY };

const kwh = (v) => (v == null ? '—' : `${v.toFixed(3)} kWh`);

export async function energyView() {
  if (needSignIn()) return;
  const [devices, summary] = await Promise.all([
    api('GET', '/api/v1/devices?limit=100'), api('GET', '/api/v1/energy/summary')]);
  const create = submitter(h('form', { class: 'inline', id: 'device-form' },
    input('Device name', { name: 'name', required: true, maxlength: 100 }),
    select('Kind', { name: 'kind' }, [['meter', 'Meter'], ['solar', 'Solar'], ['battery', 'Battery'], ['other', 'Other']], 'meter'),
    h('button', { type: 'submit' }, 'Add device')), async (data) => {
    const d = await api('POST', '/api/v1/devices', { name: data.get('name'), kind: data.get('kind') });
    location.hash = `#/energy/${d.id}`;
  });
  show('Energy',
    summaryFacts(summary),
    h('h2', {}, 'Devices'),
    devices.items.length ? table('devices', ['Device', 'Kind', 'Added'], devices.items.map((d) => h('tr', { 'data-device': d.id },
      h('td', {}, h('a', { href: `#/energy/${d.id}` }, d.name)), h('td', {}, d.kind), h('td', {}, when(d.created_at)))))
      : h('p', {}, 'No devices yet.'),
    h('h2', {}, 'Add a device'), create);
}

function summaryFacts(s) {
  const share = s.self_sufficiency == null ? '—' : `${(s.self_sufficiency * 100).toFixed(1)} %`;
  return h('dl', { class: 'facts summary', id: 'energy-summary' },
    h('dt', {}, 'Consumption'), h('dd', {}, kwh(s.consumption_kwh)),
    h('dt', {}, 'Generation'), h('dd', {}, kwh(s.generation_kwh)),
    h('dt', {}, 'Net (from the grid)'), h('dd', {}, kwh(s.net_kwh)),
    h('dt', {}, 'Self-sufficiency'), h('dd', { id: 'self-sufficiency' }, h('strong', {}, share)),
    h('dt', {}, 'Readings'), h('dd', {}, `${s.readings} from ${s.devices} device${s.devices === 1 ? '' : 's'}`));
}

export async function deviceView(id, params) {
  if (needSignIn()) return;
  const bucket = ['hour', 'day', 'month'].includes(params.get('bucket')) ? params.get('bucket') : 'hour';
  const d = await api('GET', `/api/v1/devices/${id}`);
  const from = new Date(Date.now() - SPAN[bucket]).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const readings = api('GET', `/api/v1/devices/${id}/readings?bucket=${bucket}&limit=1000&from=${encodeURIComponent(from)}`);
  const range = `from=${encodeURIComponent(from)}`;
  const summary = api('GET', `/api/v1/energy/summary?${range}`);
  const parts = [h('p', {}, `${d.kind} · added ${when(d.created_at)} · `, h('a', { href: '#/energy' }, '← All devices'))];

  const buckets = h('nav', { class: 'pager', 'aria-label': 'Readings per' }, ['hour', 'day', 'month'].map((b) =>
    h('a', { href: `#/energy/${id}?bucket=${b}`, class: `button ${b === bucket ? '' : 'secondary'}`, 'aria-current': b === bucket ? 'true' : null }, `By ${b}`)));
  const page = await readings;
  page.items.sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
  const sum = (x) => (x ? x.sum : 0);
  parts.push(h('h2', {}, `Readings by ${bucket}`), buckets);
  parts.push(page.items.length ? h('div', { id: 'readings-chart' }, timeChart({
    label: `${d.name}: consumption and generation per ${bucket}`, unit: '', bars: bucket !== 'hour',
    series: [
      { name: 'Consumption kWh', cls: 's1', points: page.items.map((a) => [Date.parse(a.ts), sum(a.consumption_kwh)]) },
      { name: 'Generation kWh', cls: 's2', points: page.items.map((a) => [Date.parse(a.ts), sum(a.generation_kwh)]) },
    ],
  })) : h('p', { id: 'readings-chart' }, 'No readings in this range.'));
  parts.push(h('h3', {}, `Summary since ${new Date(from).toLocaleDateString()} (all your devices)`), summaryFacts(await summary));

  // A forecast needs readings (a battery usually has none, only its CSV samples).
  const forecastBox = h('div', { id: 'forecast' }, h('p', { class: 'muted' }, 'Computing the forecast…'));
  if (page.items.length) parts.push(h('h2', {}, 'Forecast (next 48 hours)'), forecastBox);
  if (d.kind === 'battery') parts.push(...batteryParts(d));
  show(d.name, ...parts);
  if (page.items.length) loadForecast(d, forecastBox);
}

// The forecast is hourly, whichever bucket the readings chart shows: the actual line
// beside it is the last 48 hours, read per hour.
async function loadForecast(d, box) {
  try {
    const since = new Date(Date.now() - 2 * DAY).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const [f, hours] = await Promise.all([
      api('GET', `/api/v1/devices/${d.id}/forecast?horizon=48h&interval=hour`),
      api('GET', `/api/v1/devices/${d.id}/readings?bucket=hour&limit=100&from=${encodeURIComponent(since)}`)]);
    const recent = hours.items.map((a) => [Date.parse(a.ts), a.consumption_kwh ? a.consumption_kwh.sum : 0])
      .sort((a, b) => a[0] - b[0]);
    const pts = f.points.map((p) => [Date.parse(p.ts), p]);
    const bt = f.backtest;
    box.replaceChildren(timeChart({
      label: `${d.name}: consumption of the last 48 hours and forecast of the next ${f.horizon} with 80 % and 95 % bands`,
      series: [
        { name: 'Actual kWh', cls: 's1', points: recent },
        { name: 'Forecast kWh', cls: 's3', points: pts.map(([t, p]) => [t, p.value]) },
      ],
      bands: [
        { name: '95 % band', cls: 'b95', points: pts.map(([t, p]) => [t, p.lower_95, p.upper_95]) },
        { name: '80 % band', cls: 'b80', points: pts.map(([t, p]) => [t, p.lower_80, p.upper_80]) },
      ],
    }), h('p', { id: 'backtest' }, `Model ${f.model} on ${f.history_len} hours of history. Backtest over the last ${bt.window} hours: `,
      `mean absolute error ${bt.mae.toFixed(3)} kWh`, bt.mape == null ? '' : `, ${bt.mape.toFixed(1)} % mean absolute percentage error`, '.'));
  } catch (err) {
    box.replaceChildren(h('p', { class: 'muted' }, `No forecast: ${err.message} (${err.code || 'error'})`));
  }
}

function batteryParts(d) {
  // A fresh `to` bound (a valid parameter, unlike a cache-buster) makes a new upload show.
  const chart = () => h('img', {
    src: `/api/v1/devices/${d.id}/battery/chart.svg?to=${encodeURIComponent(new Date(Date.now() + 60000).toISOString().replace(/\.\d{3}Z$/, 'Z'))}`,
    alt: `${d.name}: state of charge and voltage`,
    class: 'battery-chart', id: 'battery-chart',
  });
  const chartBox = h('div', {}, chart());
  const report = h('div', { id: 'battery-summary' });
  const drawReport = async () => {
    const r = await api('GET', `/api/v1/devices/${d.id}/battery`);
    const s = r.summary;
    report.replaceChildren(s ? h('dl', { class: 'facts' },
      h('dt', {}, 'Samples'), h('dd', {}, `${s.samples}`),
      h('dt', {}, 'State of charge'), h('dd', {}, `${s.soc_min_pct.toFixed(0)}–${s.soc_max_pct.toFixed(0)} %, mean ${s.soc_mean_pct.toFixed(1)} %`),
      h('dt', {}, 'Full cycles'), h('dd', {}, s.equivalent_full_cycles.toFixed(2)),
      h('dt', {}, 'Energy in'), h('dd', {}, kwh(s.energy_in_kwh)),
      s.energy_out_kwh == null ? null : [h('dt', {}, 'Energy out'), h('dd', {}, kwh(s.energy_out_kwh))])
      : h('p', {}, 'No battery data yet.'));
  };
  drawReport().catch((err) => report.replaceChildren(h('p', { class: 'muted' }, err.message)));
  const upload = submitter(h('form', { id: 'battery-form' },
    h('label', {}, 'CSV file', h('input', { type: 'file', name: 'file', accept: '.csv,text/csv' })),
    h('label', {}, 'or paste CSV (timestamp, soc, voltage, current, temperature)',
      h('textarea', { name: 'csv', rows: 5, spellcheck: 'false', class: 'mono' })),
    h('button', { type: 'submit' }, 'Upload')), async (data) => {
    const file = data.get('file');
    const text = file && file.size ? await file.text() : data.get('csv');
    const r = await api('POST', `/api/v1/devices/${d.id}/battery.csv`, text, 'text/csv');
    upload.querySelector('#battery-result').replaceChildren(`Stored ${r.stored} samples.`);
    chartBox.replaceChildren(chart());
    await drawReport();
  });
  upload.append(h('p', { class: 'success', role: 'status', id: 'battery-result' }));
  return [h('h2', {}, 'Battery'), report, chartBox, h('h3', {}, 'Upload battery data'), upload];
}
