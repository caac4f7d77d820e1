import { Rng } from '../../shared/rng.js';

/** A benchmark objective: a box, its minimum value, and f (noisy ones also give the noise-free f). */
export interface BenchFunction {
  name: string;
  dims: number;
  low: number[];
  high: number[];
  min: number;
  f: (x: number[], rng: Rng) => number;
  /** noise-free value, for regret (defaults to f) */
  clean?: (x: number[]) => number;
}

const box = (d: number, lo: number, hi: number) => ({ dims: d, low: new Array<number>(d).fill(lo), high: new Array<number>(d).fill(hi) });

const branin: BenchFunction = {
  name: 'branin-2d',
  dims: 2,
  low: [-5, 0],
  high: [10, 15],
  min: 0.397887357729738,
  f: ([x, y]) => {
    const a = 1,
      b = 5.1 / (4 * Math.PI ** 2),
      c = 5 / Math.PI,
      r = 6,
      s = 10,
      t = 1 / (8 * Math.PI);
    return a * (y! - b * x! ** 2 + c * x! - r) ** 2 + s * (1 - t) * Math.cos(x!) + s;
  },
};

const H6A = [
  [10, 3, 17, 3.5, 1.7, 8],
  [0.05, 10, 17, 0.1, 8, 14],
  [3, 3.5, 1.7, 10, 17, 8],
  [17, 8, 0.05, 10, 0.1, 14],
];
const H6P = [
  [1312, 1696, 5569, 124, 8283, 5886],
  [2329, 4135, 8307, 3736, 1004, 9991],
  [2348, 1451, 3522, 2883, 3047, 6650],
  [4047, 8828, 8732, 5743, 1091, 381],
].map((r) => r.map((v) => v * 1e-4));
const H6C = [1, 1.2, 3, 3.2];
const hartmann6: BenchFunction = {
  name: 'hartmann-6d',
  ...box(6, 0, 1),
  min: -3.32236801141551,
  f: (x) => -H6C.reduce((s, c, i) => s + c * Math.exp(-H6A[i]!.reduce((e, a, j) => e + a * (x[j]! - H6P[i]![j]!) ** 2, 0)), 0),
};

const rosenbrock: BenchFunction = {
  name: 'rosenbrock-4d',
  ...box(4, -2, 2),
  min: 0,
  f: (x) => x.slice(0, -1).reduce((s, v, i) => s + 100 * (x[i + 1]! - v * v) ** 2 + (1 - v) ** 2, 0),
};

const ackley: BenchFunction = {
  name: 'ackley-8d',
  ...box(8, -5, 10),
  min: 0,
  f: (x) => {
    const d = x.length;
    const s1 = x.reduce((s, v) => s + v * v, 0);
    const s2 = x.reduce((s, v) => s + Math.cos(2 * Math.PI * v), 0);
    return -20 * Math.exp(-0.2 * Math.sqrt(s1 / d)) - Math.exp(s2 / d) + 20 + Math.E;
  },
};

const styblinski: BenchFunction = {
  name: 'styblinski-tang-5d',
  ...box(5, -5, 5),
  min: -39.16616570377142 * 5,
  f: (x) => x.reduce((s, v) => s + (v ** 4 - 16 * v * v + 5 * v) / 2, 0),
};

const levy: BenchFunction = {
  name: 'levy-10d',
  ...box(10, -10, 10),
  min: 0,
  f: (x) => {
    const w = x.map((v) => 1 + (v - 1) / 4);
    const d = w.length;
    let s = Math.sin(Math.PI * w[0]!) ** 2;
    for (let i = 0; i < d - 1; i++) s += (w[i]! - 1) ** 2 * (1 + 10 * Math.sin(Math.PI * w[i]! + 1) ** 2);
    return s + (w[d - 1]! - 1) ** 2 * (1 + Math.sin(2 * Math.PI * w[d - 1]!) ** 2);
  },
};

/**
 * A merge-like surrogate: 4 weights in [−1, 2], a sharp rotated quadratic (condition number 100)
 * whose optimum has mixed signs, observed with noise — the shape of a dev-loss landscape.
 */
function mergeSurrogate(): BenchFunction {
  const rng = new Rng(2024);
  const d = 4;
  // a random rotation (Gram–Schmidt on a Gaussian matrix)
  const Q: number[][] = [];
  for (let i = 0; i < d; i++) {
    let v = Array.from({ length: d }, () => rng.normal());
    for (const q of Q) {
      const dot = v.reduce((s, x, k) => s + x * q[k]!, 0);
      v = v.map((x, k) => x - dot * q[k]!);
    }
    const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    Q.push(v.map((x) => x / n));
  }
  const eig = [100, 20, 5, 1];
  const opt = [0.7, -0.35, 0.9, 0.25];
  const clean = (x: number[]): number => {
    const dx = x.map((v, i) => v - opt[i]!);
    return Q.reduce((s, q, i) => s + eig[i]! * q.reduce((a, qk, k) => a + qk * dx[k]!, 0) ** 2, 0);
  };
  return { name: 'merge-surrogate-4d', ...box(d, -1, 2), min: 0, clean, f: (x, r) => clean(x) + 0.05 * r.normal() };
}

export const STANDARD_FUNCTIONS = [branin, hartmann6, rosenbrock, ackley, styblinski, levy];
export const ALL_FUNCTIONS = [...STANDARD_FUNCTIONS, mergeSurrogate()];
