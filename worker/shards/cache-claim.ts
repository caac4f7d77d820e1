import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { OptimerError } from '../../shared/index.js';

/** What a worker leaves in the cache folder it uses: `.worker-<hash of its id>.json`. */
interface Claim {
  worker: string;
  pid: number;
  host: string;
  /** its cache limit, bytes (0: none) */
  limitBytes: number;
  since: string;
}

const CLAIM = /^\.worker-[0-9a-f]{12}\.json$/;

/**
 * Marks the cache folder as used by this worker, and refuses to share it where one worker's
 * eviction could delete blobs another is using: a worker with a cache limit needs the folder to
 * itself, and no worker joins a folder that a limited worker uses. Workers without a limit share
 * a folder as before (`optimer run`'s local workers do). A claim of a process that is gone (same
 * host, pid not running) is removed; one from another host is trusted, and the message names
 * its file. Returns the release (the file is removed).
 */
export async function claimCacheDir(dir: string, worker: string, limitBytes: number): Promise<() => Promise<void>> {
  const mine = `.worker-${createHash('sha256').update(worker).digest('hex').slice(0, 12)}.json`;
  const claim: Claim = { worker, pid: process.pid, host: hostname(), limitBytes, since: new Date().toISOString() };
  // written before the others are read: two workers starting at once each see the other
  await writeFile(join(dir, mine), JSON.stringify(claim));
  const release = () => rm(join(dir, mine), { force: true });
  for (const name of await readdir(dir)) {
    if (name === mine || !CLAIM.test(name)) continue;
    const other = await readClaim(join(dir, name));
    if (!other) continue;
    if (other.host === hostname() && !alive(other.pid)) {
      await rm(join(dir, name), { force: true });
      continue;
    }
    if (limitBytes > 0 || other.limitBytes > 0) {
      await release();
      const who = `worker ${other.worker} (pid ${other.pid} on ${other.host}${other.limitBytes > 0 ? ', with a cache limit' : ''})`;
      throw new OptimerError(
        'BAD_ARGUMENT',
        `cache ${dir} is used by ${who}: a worker with --cache-max-gb deletes blobs from its cache, so it needs a folder no other worker uses; ` +
          `give each worker its own --cache (or no worker --cache-max-gb); if that worker is gone, remove ${join(dir, name)}`,
      );
    }
  }
  return release;
}

async function readClaim(path: string): Promise<Claim | null> {
  try {
    const c = JSON.parse(await readFile(path, 'utf8')) as Partial<Claim>;
    if (typeof c.worker !== 'string' || typeof c.pid !== 'number' || typeof c.host !== 'string') return null;
    return { worker: c.worker, pid: c.pid, host: c.host, limitBytes: Number(c.limitBytes) || 0, since: String(c.since ?? '') };
  } catch {
    return null; // being written, or not ours: ignored
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
