import { createHash, randomFillSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { PieceHasher, type PieceList } from '../../shared/pieces.js';

/** A random blob on disk, with its sha256 and piece hashes: what the transfer benchmarks move. */
export async function writeBlob(
  path: string,
  mb: number,
  pieceBytes: number,
): Promise<{ sha256: string; bytes: number; pieces: PieceList }> {
  const data = Buffer.allocUnsafe(mb << 20);
  randomFillSync(data);
  await writeFile(path, data);
  const h = new PieceHasher(pieceBytes);
  h.update(data);
  return { sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length, pieces: { pieceBytes, pieces: h.finish() } };
}
