// The optimer dashboard page: reads /api/studies and /api/studies/NAME (the status JSON of
// `optimer study status --json`), redraws when /api/events says a study changed. Every text from
// the server goes in through textContent, never as HTML: study names and error messages are
// untrusted.
/* global uPlot */

const token = new URLSearchParams(location.search).get('token');
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const COLORS = ['#2f6fde', '#e67e22', '#16a085', '#8e44ad', '#c0392b', '#7f8c8d', '#d4ac0d', '#1abc9c', '#34495e', '#e84393'];
/** At most this many reloads of a study per second, however many events arrive. */
const MIN_RELOAD_MS = 400;

const state = {
  studies: [],
  selected: decodeURIComponent(location.hash.replace(/^#study=/, '')) || null,
  status: null,
  sort: { key: 'number', dir: 1 },
  charts: {},
  /** how many times the selected study's status was drawn (tests read it) */
  draws: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const fmt = (x, digits = 4) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : Number(x).toFixed(digits));
const pct = (x) => `${(100 * x).toFixed(1)}%`;
/** bytes in binary units, as `optimer study status` and `--cache-max-gb` count them */
function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? Math.round(v) : v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}
function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

async function getJson(path) {
  const r = await fetch(path, { headers });
  if (r.status === 401) throw new Error('this dashboard needs its token: open the URL optimer printed (…/?token=…)');
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${path}: HTTP ${r.status}`);
  return body;
}

// ---- the studies ---------------------------------------------------------------------------

async function loadStudies() {
  const { studies } = await getJson('api/studies');
  state.studies = studies;
  if (!state.selected || !studies.some((s) => s.study === state.selected)) {
    state.selected = (studies.find((s) => s.live) ?? studies[0])?.study ?? null;
  }
  drawStudyList();
}

function drawStudyList() {
  const nav = $('studies');
  nav.replaceChildren(
    ...state.studies.map((s) =>
      el(
        'button',
        {
          'aria-current': String(s.study === state.selected),
          'data-study': s.study,
          onclick: () => {
            state.selected = s.study;
            location.hash = `study=${encodeURIComponent(s.study)}`;
            drawStudyList();
            void loadStatus();
          },
        },
        el('div', { class: 'name', text: s.study }),
        el('div', {
          class: `muted state-${s.state}`,
          text: `${s.state}${s.live ? ' · live' : ''} · ${s.progress.phase} ${s.progress.done}/${s.progress.total}`,
        }),
        el('div', { class: 'muted', text: s.best ? `best ${fmt(s.best.objective)} (trial ${s.best.trial})` : 'no complete trial' }),
      ),
    ),
  );
  $('empty').hidden = state.studies.length > 0;
}

// ---- one study -----------------------------------------------------------------------------

async function loadStatus() {
  if (!state.selected) return;
  const name = state.selected;
  const status = await getJson(`api/studies/${encodeURIComponent(name)}`);
  if (name !== state.selected) return;
  state.status = status;
  drawStatus();
}

function card(label, value, extra) {
  return el('div', { class: 'card' }, el('div', { class: 'label', text: label }), el('div', { class: 'value', text: value }), extra);
}

function drawStatus() {
  const st = state.status;
  const s = st.summary;
  $('detail').hidden = false;
  $('title').textContent = `${s.study} — ${s.direction} ${s.metric}`;
  const failure = $('failure');
  failure.hidden = !s.failure;
  failure.textContent = s.failure ? `Stopped: ${s.failure.code}: ${s.failure.message} (trials ${s.failure.trials.join(', ')})` : '';
  const done = s.progress.total > 0 ? s.progress.done / s.progress.total : 0;
  const bar = el('div', { class: 'bar' }, el('div'));
  bar.firstChild.style.width = pct(Math.min(1, done));
  $('cards').replaceChildren(
    card('State', `${s.state}${s.live ? ' (live)' : ''}`),
    card(`Phase: ${s.progress.phase}`, `${s.progress.done} / ${s.progress.total}`, bar),
    card('Best', s.best ? `${fmt(s.best.objective)}` : '–', el('div', { class: 'muted', text: s.best ? `trial ${s.best.trial}` : '' })),
    card(
      'ETA',
      s.eta ? duration(s.eta.seconds) : '–',
      el('div', { class: 'muted', text: s.eta ? `${s.eta.jobsPerMinute.toFixed(1)} trials/min` : '' }),
    ),
    card(
      'Trials',
      `${s.trials.complete} ok · ${s.trials.failed} failed`,
      el('div', { class: 'muted', text: `${s.trials.running} running` }),
    ),
    card(
      'Workers',
      s.mesh ? `${s.mesh.busy} busy · ${s.mesh.idle} idle` : '–',
      el('div', { class: 'muted', text: s.mesh ? `${s.mesh.lost} lost` : '' }),
    ),
    card('Compute', duration(s.compute.totalSeconds), el('div', { class: 'muted', text: `eval ${duration(s.compute.evalSeconds)}` })),
  );
  drawObjectiveChart(st);
  drawSetsChart(st);
  drawMixture(s);
  drawParallel(st);
  drawBaselines(st);
  drawWorkers(st);
  drawTrials();
  state.draws++;
  document.body.dataset.draws = String(state.draws);
}

/** uPlot: made once per container and series layout, then only given new data. */
function plot(id, series, data) {
  const box = $(id);
  const key = JSON.stringify(series.map((x) => x.label));
  const width = Math.max(300, box.clientWidth - 8);
  const c = state.charts[id];
  if (c && c.key === key && c.width === width) {
    c.u.setData(data);
    return;
  }
  if (c) c.u.destroy();
  const u = new uPlot(
    {
      width,
      height: 240,
      scales: { x: { time: false } },
      series: [{ label: 'trial' }, ...series],
      axes: [{ label: 'trial' }, {}],
      legend: { show: true },
    },
    data,
    box,
  );
  state.charts[id] = { u, key, width };
}

function drawObjectiveChart(st) {
  const s = st.summary;
  const trials = st.trials.items;
  const x = trials.map((t) => t.number);
  const y = trials.map((t) => (t.state === 'complete' ? t.objective : null));
  const sign = s.direction === 'minimize' ? 1 : -1;
  let best = null;
  const bestSoFar = y.map((v) => {
    if (v !== null && (best === null || sign * v < sign * best)) best = v;
    return best;
  });
  const series = [
    { label: 'objective', stroke: COLORS[0], paths: () => null, points: { show: true, size: 5, fill: COLORS[0] } },
    { label: 'best so far', stroke: '#c0392b', width: 2, paths: uPlot.paths.stepped({ align: 1 }) },
  ];
  const data = [x, y, bestSoFar];
  s.baselines.forEach((b, i) => {
    if (b.objective === null) return;
    series.push({ label: b.label, stroke: COLORS[(i + 2) % COLORS.length], dash: [6, 4], points: { show: false } });
    data.push(x.map(() => b.objective));
  });
  plot('chart-objective', series, data);
}

function drawSetsChart(st) {
  const trials = st.trials.items;
  const sets = st.summary.sets.map((x) => x.name);
  const series = sets.map((name, i) => ({
    label: name,
    stroke: COLORS[i % COLORS.length],
    paths: () => null,
    points: { show: true, size: 4, fill: COLORS[i % COLORS.length] },
  }));
  const data = [
    trials.map((t) => t.number),
    ...sets.map((name) => trials.map((t) => (t.state === 'complete' ? (t.scores[name] ?? null) : null))),
  ];
  plot('chart-sets', series, data);
}

function drawMixture(s) {
  const box = $('mixture');
  if (!s.best) {
    box.replaceChildren(el('p', { class: 'muted', text: 'No complete trial yet.' }));
    return;
  }
  const bar = el('div', { class: 'mix-bar' });
  const rows = [];
  s.vectors.forEach((v, i) => {
    const share = s.best.mixture[v];
    const w = s.best.weights[v] ?? 0;
    if (typeof share === 'number' && share > 0) {
      const seg = el('div', { title: `${v} ${pct(share)}`, text: `${v} ${pct(share)}` });
      seg.style.width = pct(share);
      seg.style.background = COLORS[i % COLORS.length];
      bar.append(seg);
    }
    rows.push(
      el(
        'tr',
        {},
        el('td', { text: v }),
        el('td', { class: 'num', text: fmt(w) }),
        el('td', { class: 'num', text: typeof share === 'number' ? pct(share) : 'removed (negative weight)' }),
      ),
    );
  });
  const table = el(
    'table',
    { class: 'data' },
    el('tr', {}, el('th', { text: 'vector' }), el('th', { text: 'weight' }), el('th', { text: 'share' })),
    ...rows,
  );
  box.replaceChildren(bar, table, el('p', { class: 'muted weights-arg', text: `--weights ${s.best.weightsArg}` }));
}

/** Parallel coordinates of the trials' weights, drawn on a canvas (uPlot has no such chart). */
function drawParallel(st) {
  const canvas = $('parallel');
  const s = st.summary;
  const dpr = window.devicePixelRatio || 1;
  const cssW = Math.max(300, canvas.parentElement.clientWidth - 16);
  const cssH = 260;
  canvas.width = cssW * dpr;
  canvas.height = cssH * dpr;
  canvas.style.height = `${cssH}px`;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, cssW, cssH);
  const axes = [...s.vectors, s.metric];
  const done = st.trials.items.filter((t) => t.state === 'complete' && t.objective !== null);
  if (axes.length < 2 || done.length === 0) return;
  const pad = { l: 40, r: 40, t: 20, b: 42 };
  const xAt = (i) => pad.l + (i * (cssW - pad.l - pad.r)) / (axes.length - 1);
  const values = (t) => [...s.vectors.map((v) => t.weights[v] ?? 0), t.objective];
  const lo = axes.map((_, i) => Math.min(...done.map((t) => values(t)[i])));
  const hi = axes.map((_, i) => Math.max(...done.map((t) => values(t)[i])));
  const yAt = (i, v) => pad.t + (cssH - pad.t - pad.b) * (hi[i] === lo[i] ? 0.5 : 1 - (v - lo[i]) / (hi[i] - lo[i])); // higher is up
  const oLo = lo[axes.length - 1];
  const oHi = hi[axes.length - 1];
  const goodness = (o) => (oHi === oLo ? 1 : s.direction === 'minimize' ? (oHi - o) / (oHi - oLo) : (o - oLo) / (oHi - oLo));
  const bestTrial = s.best ? s.best.trial : null;
  const sorted = [...done].sort((a, b) => goodness(a.objective) - goodness(b.objective));
  for (const t of sorted) {
    const v = values(t);
    const isBest = t.number === bestTrial;
    g.strokeStyle = isBest ? '#c0392b' : `rgba(47,111,222,${0.12 + 0.7 * goodness(t.objective)})`;
    g.lineWidth = isBest ? 3 : 1;
    g.beginPath();
    v.forEach((y, i) => {
      if (i === 0) g.moveTo(xAt(i), yAt(i, y));
      else g.lineTo(xAt(i), yAt(i, y));
    });
    g.stroke();
  }
  g.fillStyle = '#1d2430';
  g.strokeStyle = '#6b7385';
  g.lineWidth = 1;
  g.font = '12px system-ui, sans-serif';
  g.textAlign = 'center';
  axes.forEach((name, i) => {
    g.beginPath();
    g.moveTo(xAt(i), pad.t);
    g.lineTo(xAt(i), cssH - pad.b);
    g.stroke();
    g.fillText(name, xAt(i), cssH - 6);
    g.fillText(fmt(hi[i], 2), xAt(i), pad.t - 6);
    g.fillText(fmt(lo[i], 2), xAt(i), cssH - pad.b + 12);
  });
}

function drawBaselines(st) {
  const s = st.summary;
  const tests = new Map(st.tests.map((t) => [t.label, t]));
  const rows = [...(s.best ? [{ ...s.best, label: `best (trial ${s.best.trial})` }] : []), ...s.baselines].map((b) =>
    el(
      'tr',
      {},
      el('td', { text: b.label }),
      el('td', { class: 'num', text: fmt(b.objective) }),
      el('td', { class: 'num', text: b.test ? fmt(b.test.mean) : (tests.get(b.label)?.state ?? '–') }),
      el('td', {
        text: Object.entries(b.weights)
          .map(([k, v]) => `${k}=${fmt(v, 3)}`)
          .join(' '),
      }),
    ),
  );
  $('baselines').replaceChildren(
    el(
      'tr',
      {},
      el('th', { text: 'merge' }),
      el('th', { text: `dev ${s.metric}` }),
      el('th', { text: 'test mean' }),
      el('th', { text: 'weights' }),
    ),
    ...rows,
  );
}

function drawWorkers(st) {
  const cap = (w) => w.capabilities || null;
  const any = st.workers.some((w) => cap(w));
  const idle = (c) => (c.onlyWhenIdle ? (c.gpuIdle ? 'idle-only (GPU idle)' : 'idle-only (GPU in use)') : '');
  const limits = (c) => [...c.studies.map((x) => `study ${x}`), ...c.departments.map((x) => `dept ${x}`)].join(', ');
  const extra = any ? ['device', 'memory', 'trials/min', 'tokens/s', 'limits'] : [];
  // older workers say nothing of their cache: the columns appear when one does
  const anyCache = st.workers.some((w) => w.cache);
  const cacheCols = anyCache ? ['cache', 'transfers'] : [];
  const head = el(
    'tr',
    {},
    ...['worker', 'state', 'provider', ...extra, 'current job', 'answered', 'failed', ...cacheCols, 'last seen'].map((h) =>
      el('th', { text: h }),
    ),
  );
  const cacheText = (c) =>
    c
      ? `${bytes(c.usedBytes)} / ${c.limitBytes === null ? 'no limit' : bytes(c.limitBytes)}, ${c.blobs} blobs` +
        (c.evictedBlobs ? `, ${c.evictedBlobs} evicted` : '')
      : '–';
  const transferText = (ts) =>
    ts.length === 0
      ? '–'
      : ts
          .map(
            (t) =>
              `${t.blob} ${bytes(t.doneBytes)} of ${bytes(t.bytes)}, ${bytes(t.bytesPerSecond)}/s, ` +
              `${bytes(t.fromPeers)} from ${t.peers} peer${t.peers === 1 ? '' : 's'}, ${bytes(t.fromCoordinator)} from the coordinator`,
          )
          .join('; ');
  const rows = st.workers.map((w) => {
    const c = cap(w);
    const extraCells = !any
      ? []
      : c
        ? [
            el('td', { text: c.deviceName || '–' }),
            el('td', { class: 'num', text: c.memoryGb ? `${fmt(c.memoryGb, 1)} GB` : '–' }),
            el('td', { class: 'num', text: fmt(c.trialsPerMinute, 1) }),
            el('td', { class: 'num', text: fmt(c.tokensPerSecond, 0) }),
            el('td', { text: [idle(c), limits(c)].filter(Boolean).join('; ') || '–' }),
          ]
        : extra.map(() => el('td', { text: '–' }));
    return el(
      'tr',
      {},
      el('td', { text: w.id }),
      el('td', { class: `state-${w.state}`, text: w.state }),
      el('td', { text: c?.provider || w.provider || '–' }),
      ...extraCells,
      el('td', {
        text: w.job ? `${w.job.study} ${w.job.kind === 'TRIAL' ? 'trial' : 'test'} ${w.job.trial} (attempt ${w.job.attempt})` : '–',
      }),
      el('td', { class: 'num', text: String(w.completed) }),
      el('td', { class: 'num', text: String(w.failed) }),
      ...(anyCache
        ? [el('td', { class: 'cache', text: cacheText(w.cache) }), el('td', { class: 'transfers', text: transferText(w.transfers || []) })]
        : []),
      el('td', { text: `${(w.silentMs / 1000).toFixed(1)} s ago` }),
    );
  });
  $('workers').replaceChildren(
    head,
    ...(rows.length
      ? rows
      : [
          el(
            'tr',
            {},
            el('td', {
              class: 'muted',
              text: state.status.summary.live ? 'no worker heard yet' : 'not live: the coordinator is not running',
            }),
          ),
        ]),
  );
}

// ---- the trial table: sorts by any column, filters by state and text ---------------------------

function trialColumns(s) {
  const cols = [
    { key: 'number', label: '#', value: (t) => t.number, num: true },
    { key: 'state', label: 'state', value: (t) => t.state },
    { key: 'objective', label: s.metric, value: (t) => t.objective, num: true, show: (v) => fmt(v) },
  ];
  for (const set of s.sets)
    cols.push({ key: `set:${set.name}`, label: set.name, value: (t) => t.scores[set.name] ?? null, num: true, show: (v) => fmt(v) });
  for (const v of s.vectors)
    cols.push({ key: `w:${v}`, label: `w ${v}`, value: (t) => t.weights[v] ?? 0, num: true, show: (x) => fmt(x, 3) });
  cols.push(
    { key: 'worker', label: 'worker', value: (t) => t.worker ?? '' },
    { key: 'attempt', label: 'attempt', value: (t) => t.attempt, num: true },
    { key: 'seconds', label: 'eval s', value: (t) => (t.timings ? t.timings.evalMs / 1000 : null), num: true, show: (v) => fmt(v, 2) },
    { key: 'error', label: 'error', value: (t) => (t.error ? `${t.error.code}: ${t.error.message}` : '') },
  );
  return cols;
}

function drawTrials() {
  const st = state.status;
  const s = st.summary;
  const cols = trialColumns(s);
  const wanted = $('filter-state').value;
  const text = $('filter-text').value.trim().toLowerCase();
  const col = cols.find((c) => c.key === state.sort.key) || cols[0];
  const rows = st.trials.items
    .filter((t) => !wanted || t.state === wanted)
    .filter((t) => !text || JSON.stringify([t.worker, t.error, t.weightsArg, t.state, t.number]).toLowerCase().includes(text))
    .sort((a, b) => {
      const x = col.value(a);
      const y = col.value(b);
      if (x === y) return a.number - b.number;
      if (x === null) return 1; // missing values last, whichever the direction
      if (y === null) return -1;
      return (x < y ? -1 : 1) * state.sort.dir;
    });
  const head = el(
    'tr',
    {},
    ...cols.map((c) =>
      el('th', {
        text: c.label,
        'data-key': c.key,
        'aria-sort': c.key === state.sort.key ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none',
        onclick: () => {
          state.sort = { key: c.key, dir: state.sort.key === c.key ? -state.sort.dir : 1 };
          drawTrials();
        },
      }),
    ),
  );
  const bestTrial = s.best ? s.best.trial : null;
  const body = rows.map((t) =>
    el(
      'tr',
      { class: t.number === bestTrial ? 'best' : null, 'data-trial': String(t.number) },
      ...cols.map((c) => {
        const v = c.value(t);
        const shown = c.show ? c.show(v) : v === null || v === '' ? '–' : String(v);
        return el('td', { class: c.key === 'error' ? 'error' : c.key === 'state' ? `state-${v}` : c.num ? 'num' : null, text: shown });
      }),
    ),
  );
  $('trials').replaceChildren(head, ...body);
  $('trial-count').textContent = `${rows.length} of ${st.trials.items.length} trials`;
}

// ---- live updates ----------------------------------------------------------------------------

let reloadTimer = null;
let lastReload = 0;
function scheduleReload() {
  if (reloadTimer) return;
  const wait = Math.max(0, MIN_RELOAD_MS - (Date.now() - lastReload));
  reloadTimer = setTimeout(async () => {
    reloadTimer = null;
    lastReload = Date.now();
    try {
      await loadStudies();
      await loadStatus();
      $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $('updated').textContent = `update failed: ${e.message}`;
    }
  }, wait);
}

function connect() {
  const es = new EventSource(`api/events${token ? `?token=${encodeURIComponent(token)}` : ''}`);
  const conn = $('connection');
  es.onopen = () => {
    conn.dataset.state = 'live';
    conn.textContent = 'live';
    scheduleReload(); // catch up on what happened while disconnected
  };
  es.onerror = () => {
    conn.dataset.state = 'lost';
    conn.textContent = 'reconnecting…';
  };
  es.addEventListener('change', () => scheduleReload());
}

$('filter-state').addEventListener('change', () => state.status && drawTrials());
$('filter-text').addEventListener('input', () => state.status && drawTrials());
window.addEventListener('resize', () => state.status && drawStatus());
scheduleReload();
connect();
