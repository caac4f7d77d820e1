/**
 * The built-in model family's architecture: a small causal language model that sees the current
 * and the previous token.
 *
 *   e_t = E[x_t],  p_t = E[x_{t-1}] (zero at t = 0)
 *   h_t = tanh(e_t·A + p_t·B + b)
 *   logits_t = h_t·U + c
 *
 * Small enough to train in TypeScript in seconds, yet every weight matrix is shared across
 * tokens, so distribution vectors interfere through A, B and b the way real CPT vectors do.
 * This file is also the independent reference forward pass that tests compare ONNX Runtime with.
 */
export interface FamilyShape {
  vocab: number;
  dim: number;
  hidden: number;
  contextLength: number;
}

/** Parameters, row-major, in float64 while training. */
export interface FamilyParams {
  E: Float64Array; // [vocab, dim]
  A: Float64Array; // [dim, hidden]
  B: Float64Array; // [dim, hidden]
  b: Float64Array; // [hidden]
  U: Float64Array; // [hidden, vocab]
  c: Float64Array; // [vocab]
}

export const paramNames = ['E', 'A', 'B', 'b', 'U', 'c'] as const;
export type ParamName = (typeof paramNames)[number];

export function paramShape(s: FamilyShape, name: ParamName): number[] {
  switch (name) {
    case 'E':
      return [s.vocab, s.dim];
    case 'A':
      return [s.dim, s.hidden];
    case 'B':
      return [s.dim, s.hidden];
    case 'b':
      return [s.hidden];
    case 'U':
      return [s.hidden, s.vocab];
    case 'c':
      return [s.vocab];
  }
}

export function zerosLike(p: FamilyParams): FamilyParams {
  return {
    E: new Float64Array(p.E.length),
    A: new Float64Array(p.A.length),
    B: new Float64Array(p.B.length),
    b: new Float64Array(p.b.length),
    U: new Float64Array(p.U.length),
    c: new Float64Array(p.c.length),
  };
}

export function cloneParams(p: FamilyParams): FamilyParams {
  return { E: p.E.slice(), A: p.A.slice(), B: p.B.slice(), b: p.b.slice(), U: p.U.slice(), c: p.c.slice() };
}

/** Rounds every parameter to float32, as the exported ONNX model holds it. */
export function roundToFloat32(p: FamilyParams): FamilyParams {
  const r = (a: Float64Array): Float64Array => Float64Array.from(Float32Array.from(a));
  return { E: r(p.E), A: r(p.A), B: r(p.B), b: r(p.b), U: r(p.U), c: r(p.c) };
}

/** Hidden activations and logits of one sequence: h [len, hidden], logits [len, vocab]. */
export function forward(s: FamilyShape, p: FamilyParams, ids: ArrayLike<number>): { h: Float64Array; logits: Float64Array } {
  const { vocab: V, dim: D, hidden: H } = s;
  const L = ids.length;
  const h = new Float64Array(L * H);
  const logits = new Float64Array(L * V);
  for (let t = 0; t < L; t++) {
    const cur = ids[t]! * D;
    const prev = t > 0 ? ids[t - 1]! * D : -1;
    for (let j = 0; j < H; j++) {
      let z = p.b[j]!;
      for (let k = 0; k < D; k++) {
        z += p.E[cur + k]! * p.A[k * H + j]!;
        if (prev >= 0) z += p.E[prev + k]! * p.B[k * H + j]!;
      }
      h[t * H + j] = Math.tanh(z);
    }
    for (let v = 0; v < V; v++) {
      let l = p.c[v]!;
      for (let j = 0; j < H; j++) l += h[t * H + j]! * p.U[j * V + v]!;
      logits[t * V + v] = l;
    }
  }
  return { h, logits };
}

/** Sum over t = 1..len−1 of −ln softmax(logits[t−1])[x_t], in float64. */
export function sequenceNllSum(logits: Float64Array | Float32Array, vocab: number, ids: ArrayLike<number>, row0 = 0): number {
  let total = 0;
  for (let t = 1; t < ids.length; t++) {
    const off = (row0 + t - 1) * vocab;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) max = Math.max(max, logits[off + v]!);
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(logits[off + v]! - max);
    total += Math.log(sum) + max - logits[off + ids[t]!]!;
  }
  return total;
}

/** Token-weighted mean next-token NLL (nats) of a set of sequences: the reference for `nll`. */
export function referenceNll(s: FamilyShape, p: FamilyParams, seqs: ArrayLike<number>[]): number {
  let total = 0;
  let tokens = 0;
  for (const ids of seqs) {
    total += sequenceNllSum(forward(s, p, ids).logits, s.vocab, ids);
    tokens += ids.length - 1;
  }
  return total / tokens;
}

/** Adds the gradient of the summed NLL of one sequence to `g`; returns that NLL sum. */
export function accumulateGradient(s: FamilyShape, p: FamilyParams, ids: ArrayLike<number>, g: FamilyParams): number {
  const { vocab: V, dim: D, hidden: H } = s;
  const { h, logits } = forward(s, p, ids);
  const L = ids.length;
  const dl = new Float64Array(V);
  const dz = new Float64Array(H);
  let loss = 0;
  for (let t = 0; t < L - 1; t++) {
    const y = ids[t + 1]!;
    const off = t * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[off + v]!);
    let sum = 0;
    for (let v = 0; v < V; v++) {
      dl[v] = Math.exp(logits[off + v]! - max);
      sum += dl[v]!;
    }
    loss += Math.log(sum) + max - logits[off + y]!;
    for (let v = 0; v < V; v++) dl[v] = dl[v]! / sum;
    dl[y] = dl[y]! - 1;
    for (let v = 0; v < V; v++) g.c[v] = g.c[v]! + dl[v]!;
    for (let j = 0; j < H; j++) {
      const hj = h[t * H + j]!;
      let dh = 0;
      for (let v = 0; v < V; v++) {
        g.U[j * V + v] = g.U[j * V + v]! + hj * dl[v]!;
        dh += p.U[j * V + v]! * dl[v]!;
      }
      dz[j] = dh * (1 - hj * hj);
      g.b[j] = g.b[j]! + dz[j]!;
    }
    const cur = ids[t]! * D;
    const prev = t > 0 ? ids[t - 1]! * D : -1;
    for (let k = 0; k < D; k++) {
      let dE = 0;
      let dEp = 0;
      const ek = p.E[cur + k]!;
      const pk = prev >= 0 ? p.E[prev + k]! : 0;
      for (let j = 0; j < H; j++) {
        g.A[k * H + j] = g.A[k * H + j]! + ek * dz[j]!;
        dE += p.A[k * H + j]! * dz[j]!;
        if (prev >= 0) {
          g.B[k * H + j] = g.B[k * H + j]! + pk * dz[j]!;
          dEp += p.B[k * H + j]! * dz[j]!;
        }
      }
      g.E[cur + k] = g.E[cur + k]! + dE;
      if (prev >= 0) g.E[prev + k] = g.E[prev + k]! + dEp;
    }
  }
  return loss;
}
