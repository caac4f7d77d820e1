import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: found by walking up from this file, so it works from sources and dist/. */
function findPackageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('optimer: cannot find the package root (package.json next to proto/)');
}

export const packageRoot = findPackageRoot();
