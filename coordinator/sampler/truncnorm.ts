/**
 * Normal-distribution primitives for TPE's truncated kernels, in the forms Optuna's
 * `_truncnorm.py` uses (ndtr, log_ndtr, log_gauss_mass, ppf of the truncated normal), written
 * from the math: erfc by the Chebyshev fit of Numerical Recipes (relative error < 1.2e-7, and
 * its logarithm available without underflow), the inverse by Acklam's rational approximation
 * refined by one Halley step. Precision far beyond what the acquisition needs.
 */
const LN_SQRT_2PI = 0.5 * Math.log(2 * Math.PI);
const SQRT1_2 = Math.SQRT1_2;

/** ln erfc(z) for z ≥ 0 (no underflow in the far tail). */
function logErfcPos(z: number): number {
  const t = 1 / (1 + 0.5 * z);
  const poly =
    -1.26551223 +
    t *
      (1.00002368 +
        t *
          (0.37409196 +
            t *
              (0.09678418 +
                t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return Math.log(t) - z * z + poly;
}

export function erfc(x: number): number {
  const v = Math.exp(logErfcPos(Math.abs(x)));
  return x >= 0 ? v : 2 - v;
}

/** Φ(x), the standard normal CDF. */
export function ndtr(x: number): number {
  return x < 0 ? 0.5 * Math.exp(logErfcPos(-x * SQRT1_2)) : 1 - 0.5 * Math.exp(logErfcPos(x * SQRT1_2));
}

/** ln Φ(x), accurate in both tails. */
export function logNdtr(x: number): number {
  if (x < 0) return Math.log(0.5) + logErfcPos(-x * SQRT1_2);
  return Math.log1p(-0.5 * Math.exp(logErfcPos(x * SQRT1_2)));
}

/** ln(Φ(b) − Φ(a)) for a ≤ b, stable when both are far in one tail. */
export function logGaussMass(a: number, b: number): number {
  if (b <= 0) {
    const la = logNdtr(a);
    const lb = logNdtr(b);
    return lb + Math.log1p(-Math.exp(la - lb));
  }
  if (a > 0) return logGaussMass(-b, -a);
  // a tail beyond 9σ holds < 1.2e-19: below double precision next to 1, so not computed
  return Math.log1p(-(a < -9 ? 0 : ndtr(a)) - (b > 9 ? 0 : ndtr(-b)));
}

const A = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
const B = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
const C = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
const D = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];

/** Φ⁻¹(p) for p in (0, 1). */
export function ndtri(p: number): number {
  if (p <= 0) return -Infinity;
  if (p >= 1) return Infinity;
  let x: number;
  if (p < 0.02425) {
    const q = Math.sqrt(-2 * Math.log(p));
    x =
      (((((C[0]! * q + C[1]!) * q + C[2]!) * q + C[3]!) * q + C[4]!) * q + C[5]!) /
      ((((D[0]! * q + D[1]!) * q + D[2]!) * q + D[3]!) * q + 1);
  } else if (p <= 1 - 0.02425) {
    const q = p - 0.5;
    const r = q * q;
    x =
      ((((((A[0]! * r + A[1]!) * r + A[2]!) * r + A[3]!) * r + A[4]!) * r + A[5]!) * q) /
      (((((B[0]! * r + B[1]!) * r + B[2]!) * r + B[3]!) * r + B[4]!) * r + 1);
  } else {
    const q = Math.sqrt(-2 * Math.log1p(-p));
    x =
      -(((((C[0]! * q + C[1]!) * q + C[2]!) * q + C[3]!) * q + C[4]!) * q + C[5]!) /
      ((((D[0]! * q + D[1]!) * q + D[2]!) * q + D[3]!) * q + 1);
  }
  // one Halley step against our own Φ, so ndtr(ndtri(p)) ≈ p to its precision
  if (p > 1e-300 && p < 1 - 1e-16) {
    const e = ndtr(x) - p;
    const u = e * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2);
    x = x - u / (1 + (x * u) / 2);
  }
  return x;
}

/**
 * Inverse CDF of the standard normal truncated to [a, b], at q in [0, 1]. Works on the side of
 * the distribution where Φ is small, so truncation far in a tail keeps its precision.
 */
export function truncnormPpf(q: number, a: number, b: number): number {
  if (a > 0) return -truncnormPpf(1 - q, -b, -a);
  const pa = ndtr(a);
  const pb = ndtr(b);
  const x = ndtri(pa + q * (pb - pa));
  return Math.min(b, Math.max(a, x));
}

/** ln of the density at x of N(μ, σ²) truncated to [low, high]; −∞ outside. */
export function truncnormLogPdf(x: number, mu: number, sigma: number, low: number, high: number): number {
  if (x < low || x > high) return -Infinity;
  const z = (x - mu) / sigma;
  return -0.5 * z * z - LN_SQRT_2PI - Math.log(sigma) - logGaussMass((low - mu) / sigma, (high - mu) / sigma);
}

/** ln of the mass N(μ, σ²)[cellLow, cellHigh] relative to N(μ, σ²)[low, high] (grid params). */
export function truncnormLogMass(cellLow: number, cellHigh: number, mu: number, sigma: number, low: number, high: number): number {
  const l = Math.max(cellLow, low);
  const h = Math.min(cellHigh, high);
  if (h <= l) return -Infinity;
  return logGaussMass((l - mu) / sigma, (h - mu) / sigma) - logGaussMass((low - mu) / sigma, (high - mu) / sigma);
}
