import { describe, expect, it } from 'vitest';
import { decodeFloats, encodeFloats, floatToBfloat16, floatToHalf } from '../../shared/onnx/dtype.js';

describe('float16 and bfloat16 conversion', () => {
  it('dtype - float16 encodes known values with round-to-nearest-even', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65520, 0x7c00],
      [Infinity, 0x7c00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [3 * 2 ** -25, 0x0002],
      [0.1, 0x2e66],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
    ];
    for (const [x, bits] of cases) expect([x, floatToHalf(x)]).toEqual([x, bits]);
    expect(floatToHalf(NaN) & 0x7c00).toBe(0x7c00);
    expect(floatToHalf(NaN) & 0x3ff).not.toBe(0);
  });

  it('dtype - bfloat16 encodes known values with round-to-nearest-even', () => {
    expect(floatToBfloat16(1)).toBe(0x3f80);
    expect(floatToBfloat16(-2)).toBe(0xc000);
    expect(floatToBfloat16(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(floatToBfloat16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(floatToBfloat16(NaN) & 0x7fc0).toBe(0x7fc0);
  });

  it('dtype - every float16 value survives decode → encode', () => {
    const n = 65536;
    const bytes = new Uint8Array(n * 2);
    const dv = new DataView(bytes.buffer);
    for (let h = 0; h < n; h++) dv.setUint16(h * 2, h, true);
    const f = new Float32Array(n);
    decodeFloats('float16', bytes, f, n);
    const back = new Uint8Array(n * 2);
    encodeFloats('float16', f, back, n);
    const bdv = new DataView(back.buffer);
    for (let h = 0; h < n; h++) {
      const nan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (!nan) expect(bdv.getUint16(h * 2, true)).toBe(h);
    }
    expect(f[0x3c00]).toBe(1);
    expect(f[0x0001]).toBe(2 ** -24);
  });

  it('dtype - float32 decodes from unaligned bytes', () => {
    const src = Float32Array.from([1.5, -2.25, 3]);
    const bytes = new Uint8Array(13);
    bytes.set(new Uint8Array(src.buffer), 1);
    const out = new Float32Array(3);
    decodeFloats('float32', bytes.subarray(1), out, 3);
    expect(Array.from(out)).toEqual([1.5, -2.25, 3]);
  });
});
