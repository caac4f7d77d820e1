import { open } from 'node:fs/promises';

/** Flips one bit in the middle of a file, as a bad disk or a bad copy would; flipping again restores it. */
export async function flipByte(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, size >> 1);
    b[0] = b[0]! ^ 0x01;
    await fh.write(b, 0, 1, size >> 1);
  } finally {
    await fh.close();
  }
}
