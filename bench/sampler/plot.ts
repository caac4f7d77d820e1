import { writeFile } from 'node:fs/promises';

const COLORS = ['#1f77b4', '#d62728', '#ff7f0e', '#7f7f7f', '#2ca02c', '#9467bd'];

/** Median best-so-far regret against trials, one log-scale panel per function, as SVG. */
export async function writeRegretPlot(
  path: string,
  curves: Record<string, Record<string, number[][]>>,
  methods: string[],
  median: (xs: number[]) => number,
): Promise<void> {
  const names = Object.keys(curves);
  const cols = 4;
  const W = 300;
  const H = 220;
  const pad = 40;
  const rows = Math.ceil(names.length / cols);
  const parts: string[] = [];
  names.forEach((name, p) => {
    const ox = (p % cols) * W;
    const oy = Math.floor(p / cols) * H;
    const series = methods.map((m) => {
      const runs = curves[name]![m]!;
      return runs[0]!.map((_, t) => Math.log10(median(runs.map((r) => r[t]!)) + 1e-9));
    });
    const all = series.flat();
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    const n = series[0]!.length;
    const x = (t: number) => ox + pad + ((W - pad - 10) * t) / (n - 1);
    const y = (v: number) => oy + 20 + (H - pad - 20) * (1 - (v - lo) / (hi - lo || 1));
    parts.push(`<text x="${ox + pad}" y="${oy + 14}" font-size="12">${name}</text>`);
    parts.push(`<rect x="${ox + pad}" y="${oy + 20}" width="${W - pad - 10}" height="${H - pad - 20}" fill="none" stroke="#ccc"/>`);
    parts.push(
      `<text x="${ox + 2}" y="${y(hi) + 4}" font-size="9">1e${hi.toFixed(1)}</text><text x="${ox + 2}" y="${y(lo)}" font-size="9">1e${lo.toFixed(1)}</text>`,
    );
    parts.push(`<text x="${x(n - 1) - 20}" y="${oy + H - pad + 12}" font-size="9">${n} trials</text>`);
    series.forEach((s, i) => {
      parts.push(
        `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${s.map((v, t) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`,
      );
    });
  });
  const legendY = rows * H + 10;
  methods.forEach((m, i) => {
    parts.push(
      `<rect x="${10 + i * 150}" y="${legendY}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/><text x="${26 + i * 150}" y="${legendY + 11}" font-size="12">${m}</text>`,
    );
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${cols * W}" height="${legendY + 30}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>${parts.join('')}</svg>\n`;
  await writeFile(path, svg);
}
