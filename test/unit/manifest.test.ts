import { describe, expect, it } from 'vitest';
import { parseManifest, type PoolManifest } from '../../shared/pool/manifest.js';

const sha = (c: string) => c.repeat(64);

function manifest(): PoolManifest {
  return {
    format: 'optimer-pool',
    version: 1,
    graph: { sha256: sha('a'), bytes: 10 },
    model: { input: 'input_ids', output: 'logits', attentionMask: null, vocab: 8, contextLength: 4 },
    tensors: [
      { name: 'w', dtype: 'float32', shape: [2, 2], bytes: 16, merged: true, offset: 0 },
      { name: 'k', dtype: 'int64', shape: [1], bytes: 8, merged: false, offset: null },
    ],
    weightsBytes: 16,
    base: { source: 'base.onnx', blob: { bytes: 24, shards: [{ sha256: sha('b'), offset: 0, bytes: 24 }], tensors: { w: 0, k: 16 } } },
    vectors: [
      {
        name: 'ja',
        source: 'ja.onnx',
        l2: 1,
        blob: {
          bytes: 16,
          shards: [
            { sha256: sha('c'), offset: 0, bytes: 10 },
            { sha256: sha('d'), offset: 10, bytes: 6 },
          ],
          tensors: { w: 0 },
        },
      },
    ],
    gram: [[1]],
  };
}

describe('pool manifest validation', () => {
  it('manifest - accepts a consistent manifest', () => {
    expect(parseManifest(manifest(), 'm.json').vectors[0]!.name).toBe('ja');
  });

  it('manifest - refuses inconsistencies, naming the field', () => {
    const cases: [(m: PoolManifest) => void, RegExp][] = [
      [
        (m) => {
          m.vectors[0]!.blob.shards[1]!.offset = 9;
        },
        /m\.json: vectors\[0\]\.blob\.shards\[1\] starts at 9, expected 10/,
      ],
      [
        (m) => {
          m.vectors[0]!.blob.tensors = {};
        },
        /vectors\[0\]\.blob: tensor 'w' is missing/,
      ],
      [
        (m) => {
          m.base.blob.tensors.k = 20;
        },
        /base\.blob: tensor 'k' runs past the end of the blob/,
      ],
      [
        (m) => {
          m.gram = [];
        },
        /gram must be 1×1/,
      ],
      [
        (m) => {
          m.tensors[1]!.offset = 0;
        },
        /tensor 'k': merged tensors, and only they, have a layout offset/,
      ],
      [
        (m) => {
          m.vectors[0]!.name = '../evil';
        },
        /vectors\[0\]\.name: expected 1-64 letters/,
      ],
      [
        (m) => {
          m.vectors[0]!.name = '..';
        },
        /vectors\[0\]\.name: expected a name, not a path component/,
      ],
      [
        (m) => {
          // shards are files named by their hash: a name is never a path
          m.vectors[0]!.blob.shards[0]!.sha256 = '../../../etc/passwd';
        },
        /vectors\[0\]\.blob\.shards\[0\]\.sha256: expected a lowercase hex sha256/,
      ],
      [
        (m) => {
          m.graph.sha256 = `../${sha('a').slice(3)}`;
        },
        /graph\.sha256: expected a lowercase hex sha256/,
      ],
      [
        (m) => {
          m.tensors[0]!.shape = [2, 3];
        },
        /tensor 'w': shape \[2, 3\] of float32 is 24 bytes, the manifest says 16/,
      ],
      [
        (m) => {
          m.tensors[1]!.shape = [2 ** 40, 2 ** 40];
        },
        /tensor 'k': shape \[1099511627776, 1099511627776\] of int64 is .* bytes, the manifest says 8/,
      ],
      [
        (m) => {
          (m as unknown as { extra: number }).extra = 1;
        },
        /\(top level\): Unrecognized key/,
      ],
      [
        (m) => {
          (m.tensors[0] as { dtype: string }).dtype = 'complex64';
        },
        /tensors\[0\]\.dtype/,
      ],
      [
        (m) => {
          m.weightsBytes = 8;
        },
        /tensor 'w' runs past weightsBytes/,
      ],
    ];
    for (const [edit, message] of cases) {
      const m = manifest();
      edit(m);
      expect(() => parseManifest(m, 'm.json')).toThrow(message);
    }
  });
});
