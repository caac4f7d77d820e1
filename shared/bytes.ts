/** Sizes for people. */

/** Bytes in one GB of `--cache-max-gb` (binary, as `--memory-gb` counts). */
export const GIB = 2 ** 30;

/** A size for people, in binary units as `--cache-max-gb` counts them: 12.3 MiB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? Math.round(v) : v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}
