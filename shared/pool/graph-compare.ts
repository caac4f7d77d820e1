import { OptimerError } from '../errors.js';
import { encodeGraph, toNumber, type ModelProto, type NodeProto, type ValueInfoProto } from '../onnx/proto.js';
import type { Initializer } from '../onnx/model-file.js';
import { dtypeBytes, isMergeable } from '../onnx/dtype.js';

/**
 * Checks that a checkpoint can share a pool with the base: the same computation graph and the
 * same initializers (names, dtypes, shapes). Throws naming the first thing that differs and how.
 */
export function compareModels(
  base: { path: string; model: ModelProto; initializers: Initializer[] },
  ckpt: { path: string; model: ModelProto; initializers: Initializer[] },
): void {
  const fail = (what: string): never => {
    throw new OptimerError('POOL_MISMATCH', `${ckpt.path}: ${what} (checkpoints must come from the base's architecture and export)`);
  };
  const opset = (m: ModelProto): string =>
    (m.opsetImport ?? [])
      .map((o) => `${o.domain || 'ai.onnx'}:${toNumber(o.version)}`)
      .sort()
      .join(', ');
  if (opset(base.model) !== opset(ckpt.model)) fail(`opset imports [${opset(ckpt.model)}] differ from the base's [${opset(base.model)}]`);

  const bg = base.model.graph!;
  const cg = ckpt.model.graph!;
  const ioDiff = (kind: string, a: ValueInfoProto[] = [], b: ValueInfoProto[] = []): void => {
    const sa = a.map(describeValue);
    const sb = b.map(describeValue);
    for (let i = 0; i < Math.max(sa.length, sb.length); i++) {
      if (sa[i] !== sb[i]) fail(`graph ${kind} #${i} is ${sb[i] ?? 'missing'}, the base has ${sa[i] ?? 'none'}`);
    }
  };
  ioDiff('input', bg.input, cg.input);
  ioDiff('output', bg.output, cg.output);

  const bn = bg.node ?? [];
  const cn = cg.node ?? [];
  for (let i = 0; i < Math.max(bn.length, cn.length); i++) {
    const a = bn[i];
    const b = cn[i];
    if (!a || !b) fail(`graph has ${cn.length} nodes, the base has ${bn.length}`);
    const diff = nodeDifference(a!, b!);
    if (diff) fail(`graph differs from the base at node #${i} (${a!.opType} '${a!.name ?? ''}'): ${diff}`);
  }

  const byName = new Map(ckpt.initializers.map((t) => [t.name, t]));
  for (const t of base.initializers) {
    const c = byName.get(t.name);
    if (!c) fail(`initializer '${t.name}' of the base is missing`);
    if (c!.dtype !== t.dtype) fail(`initializer '${t.name}' is ${c!.dtype}, the base's is ${t.dtype}`);
    if (c!.shape.join(',') !== t.shape.join(','))
      fail(`initializer '${t.name}' has shape [${c!.shape.join(', ')}], the base's is [${t.shape.join(', ')}]`);
    byName.delete(t.name);
  }
  const extra = [...byName.keys()][0];
  if (extra !== undefined) fail(`initializer '${extra}' is not in the base`);
}

/** Non-float initializers are copied, not merged: they must be byte-identical to the base's. */
export function compareFixed(ckptPath: string, t: Initializer, base: Uint8Array, ckpt: Uint8Array): void {
  if (isMergeable(t.dtype)) return;
  if (Buffer.compare(base, ckpt) === 0) return;
  let i = 0;
  while (i < base.length && base[i] === ckpt[i]) i++;
  const element = Math.floor(i / dtypeBytes(t.dtype));
  throw new OptimerError(
    'POOL_MISMATCH',
    `${ckptPath}: initializer '${t.name}' (${t.dtype}, not merged) differs from the base's at element ${element}; non-float initializers must be identical across checkpoints`,
  );
}

function describeValue(v: ValueInfoProto): string {
  const tt = v.type?.tensorType;
  const dims = (tt?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : String(toNumber(d.dimValue)))).join(', ');
  return `'${v.name}' (type ${tt?.elemType ?? '?'}, [${dims}])`;
}

function nodeDifference(a: NodeProto, b: NodeProto): string | undefined {
  if (a.opType !== b.opType) return `op ${b.opType} vs ${a.opType}`;
  if ((a.domain ?? '') !== (b.domain ?? '')) return `domain '${b.domain}' vs '${a.domain}'`;
  const ai = (a.input ?? []).join(', ');
  const bi = (b.input ?? []).join(', ');
  if (ai !== bi) return `inputs [${bi}] vs [${ai}]`;
  const ao = (a.output ?? []).join(', ');
  const bo = (b.output ?? []).join(', ');
  if (ao !== bo) return `outputs [${bo}] vs [${ao}]`;
  const ea = encodeGraph({ node: [{ ...a, name: '' }] });
  const eb = encodeGraph({ node: [{ ...b, name: '' }] });
  if (Buffer.compare(Buffer.from(ea), Buffer.from(eb)) !== 0) return 'attributes differ';
  return undefined;
}
