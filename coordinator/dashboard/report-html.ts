import type { StatusTrial, StudyStatus } from '../status/status.js';

/**
 * `optimer report NAME`: one self-contained HTML file (inline CSS and SVG, no script, nothing
 * fetched), readable offline and fit to attach to a ticket. Drawn from the same status object
 * the dashboard reads, server-side, so it needs no browser to make.
 */
export function renderHtmlReport(st: StudyStatus): string {
  const s = st.summary;
  const trials = st.trials.items;
  const complete = trials.filter((t) => t.state === 'complete' && t.objective !== null);
  const sign = s.direction === 'minimize' ? 1 : -1;
  const top = [...complete].sort((a, b) => sign * ((a.objective ?? 0) - (b.objective ?? 0))).slice(0, 15);
  const failed = trials.filter((t) => t.state === 'failed');
  const best = s.best;
  const sections = [
    `<h1>${esc(s.study)}</h1>`,
    `<p class="muted">${esc(`${s.state}, ${s.trials.complete} complete and ${s.trials.failed} failed of ${s.trials.budget} trials · ${s.direction} ${s.metric} over ${s.sets.map((x) => x.name).join(', ')} · pool ${s.pool} · report made ${st.at}`)}</p>`,
    s.failure ? `<p class="failure">${esc(`Stopped: ${s.failure.code}: ${s.failure.message}`)}</p>` : '',
    best
      ? `<p><b>Best: trial ${best.trial}, ${esc(s.metric)} ${num(best.objective)}</b>${best.test ? ` (test mean ${num(best.test.mean)})` : ''}<br><code>--weights ${esc(best.weightsArg)}</code></p>`
      : '<p>No complete trial.</p>',
    '<h2>Objective over trials</h2>',
    objectivePlot(st),
    best ? `<h2>Best merge as data-mixture ratios</h2>${mixtureBar(s.vectors, best.mixture)}` : '',
    '<h2>Best and baselines</h2>',
    table(
      ['merge', ...s.sets.map((x) => `dev ${x.name}`), `dev ${s.metric}`, 'test mean', 'weights'],
      [...(best ? [{ ...best, label: `best (trial ${best.trial})` }] : []), ...s.baselines].map((m) => [
        m.label,
        ...s.sets.map((x) => num(m.dev[x.name])),
        num(m.objective),
        m.test ? num(m.test.mean) : '–',
        weightsText(m.weights),
      ]),
    ),
    `<h2>Top ${top.length} trials</h2>`,
    table(
      ['#', s.metric, ...s.sets.map((x) => x.name), 'weights', 'worker'],
      top.map((t) => trialRow(s.sets, t)),
    ),
    `<h2>Failed trials (${failed.length})</h2>`,
    failed.length
      ? table(
          ['#', 'attempts', 'error', 'worker'],
          failed.map((t) => [String(t.number), String(t.attempt), t.error ? `${t.error.code}: ${t.error.message}` : '–', t.worker ?? '–']),
        )
      : '<p class="muted">None.</p>',
    '<h2>Compute</h2>',
    table(
      ['fetch s', 'merge s', 'evaluate s', 'total s', 'workers'],
      [
        [
          num(s.compute.fetchSeconds, 1),
          num(s.compute.mergeSeconds, 1),
          num(s.compute.evalSeconds, 1),
          num(s.compute.totalSeconds, 1),
          Object.entries(s.workers)
            .map(([w, n]) => `${w}: ${n}`)
            .join(', '),
        ],
      ],
    ),
  ];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>optimer report: ${esc(s.study)}</title>
<style>${STYLE}</style></head>
<body>
${sections.filter(Boolean).join('\n')}
</body></html>
`;
}

const STYLE = `body{font:14px system-ui,sans-serif;color:#1d2430;max-width:1100px;margin:2rem auto;padding:0 1rem}
.muted{color:#6b7385}.failure{color:#c0392b;border:1px solid #c0392b;padding:.5rem;border-radius:6px}
table{border-collapse:collapse;margin:.4rem 0 1rem}th,td{border-bottom:1px solid #dde1e8;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef0f4}td.n{text-align:right;font-variant-numeric:tabular-nums}code{word-break:break-all}svg{max-width:100%;height:auto}`;
const COLORS = ['#2f6fde', '#e67e22', '#16a085', '#8e44ad', '#c0392b', '#7f8c8d', '#d4ac0d', '#1abc9c', '#34495e', '#e84393'];

function esc(x: string): string {
  return x.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

function num(x: number | null | undefined, digits = 4): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

function weightsText(w: Record<string, number>): string {
  return Object.entries(w)
    .map(([k, v]) => `${k}=${v.toFixed(3)}`)
    .join(' ');
}

function trialRow(sets: StudyStatus['summary']['sets'], t: StatusTrial): string[] {
  return [String(t.number), num(t.objective), ...sets.map((x) => num(t.scores[x.name])), weightsText(t.weights), t.worker ?? '–'];
}

/** Cells are text (escaped here); a cell that is a number right-aligns. */
function table(head: string[], rows: string[][]): string {
  const cell = (c: string) => `<td${/^-?[\d.]+$/.test(c) ? ' class="n"' : ''}>${esc(c)}</td>`;
  return `<table><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${rows.map((r) => `<tr>${r.map(cell).join('')}</tr>`).join('')}</table>`;
}

/** Each trial's objective (dots), the best so far (a step line) and the baselines (dashed). */
function objectivePlot(st: StudyStatus): string {
  const s = st.summary;
  const pts = st.trials.items
    .filter((t) => t.state === 'complete' && t.objective !== null)
    .map((t) => [t.number, t.objective as number] as const);
  if (pts.length === 0) return '<p class="muted">No complete trial.</p>';
  const W = 900;
  const H = 300;
  const m = { l: 60, r: 150, t: 10, b: 36 };
  const baselines = s.baselines.filter((b) => b.objective !== null);
  const ys = [...pts.map((p) => p[1]), ...baselines.map((b) => b.objective as number)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = (y1 - y0 || 1) * 0.05;
  const lo = y0 - pad;
  const hi = y1 + pad;
  const xMax = Math.max(1, ...st.trials.items.map((t) => t.number));
  const X = (x: number) => m.l + (x / xMax) * (W - m.l - m.r);
  const Y = (y: number) => m.t + (1 - (y - lo) / (hi - lo)) * (H - m.t - m.b);
  const sign = s.direction === 'minimize' ? 1 : -1;
  let best = Number.NaN;
  const step: string[] = [];
  for (const [x, y] of pts) {
    if (Number.isNaN(best) || sign * y < sign * best) {
      if (!Number.isNaN(best)) step.push(`L${X(x).toFixed(1)},${Y(best).toFixed(1)}`);
      best = y;
      step.push(`${step.length === 0 ? 'M' : 'L'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`);
    }
  }
  step.push(`L${X(xMax).toFixed(1)},${Y(best).toFixed(1)}`);
  // baseline labels top to bottom, at least a line apart
  const labelY = baselines.map((b) => Y(b.objective as number));
  const order = labelY.map((_, i) => i).sort((a, b) => labelY[a]! - labelY[b]!);
  for (let k = 1; k < order.length; k++) labelY[order[k]!] = Math.max(labelY[order[k]!]!, labelY[order[k - 1]!]! + 12);
  const ticks = Array.from({ length: 5 }, (_, i) => lo + ((hi - lo) * i) / 4);
  const parts = [
    `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="objective over trials">`,
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#dde1e8"/>`,
    ...ticks.map(
      (y) =>
        `<text x="${m.l - 6}" y="${Y(y) + 4}" font-size="11" text-anchor="end" fill="#6b7385">${y.toFixed(3)}</text><line x1="${m.l}" x2="${W - m.r}" y1="${Y(y)}" y2="${Y(y)}" stroke="#eef0f4"/>`,
    ),
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 6}" font-size="12" text-anchor="middle" fill="#6b7385">trial (0–${xMax})</text>`,
    ...baselines.map((b, i) => {
      const y = Y(b.objective as number);
      const c = COLORS[(i + 2) % COLORS.length];
      return `<line x1="${m.l}" x2="${W - m.r}" y1="${y}" y2="${y}" stroke="${c}" stroke-dasharray="6 4"/><text x="${W - m.r + 6}" y="${labelY[i]! + 4}" font-size="11" fill="${c}">${esc(b.label)} ${num(b.objective, 3)}</text>`;
    }),
    ...pts.map(([x, y]) => `<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="2.5" fill="${COLORS[0]}"/>`),
    `<path d="${step.join('')}" fill="none" stroke="#c0392b" stroke-width="2"/>`,
    '</svg>',
  ];
  return parts.join('\n');
}

/** The best merge's positive weights as shares of one bar; removed (negative) vectors listed under it. */
function mixtureBar(vectors: readonly string[], mixture: Record<string, number | 'removed'>): string {
  const W = 900;
  let x = 0;
  const segs: string[] = [];
  vectors.forEach((v, i) => {
    const share = mixture[v];
    if (typeof share !== 'number' || share <= 0) return;
    const w = share * W;
    segs.push(
      `<rect x="${x.toFixed(1)}" y="0" width="${w.toFixed(1)}" height="32" fill="${COLORS[i % COLORS.length]}"/><text x="${(x + 4).toFixed(1)}" y="21" font-size="12" fill="#fff">${esc(v)} ${(100 * share).toFixed(1)}%</text>`,
    );
    x += w;
  });
  const removed = vectors.filter((v) => mixture[v] === 'removed');
  return `<svg viewBox="0 0 ${W} 32" width="${W}" height="32" role="img" aria-label="mixture ratios">${segs.join('')}</svg>${
    removed.length ? `<p class="muted">removed (negative weight): ${esc(removed.join(', '))}</p>` : ''
  }`;
}
