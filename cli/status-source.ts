import { readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  isStoreInUse,
  listFromStore,
  openLevelStore,
  requestFullStatus,
  requestStudyList,
  requestStudyStatus,
  type StudyListItem,
  type StudyStatus,
  type StudyStore,
  statusFromStore,
} from '../coordinator/index.js';
import { OptimerError } from '../shared/index.js';

/**
 * Where `optimer study ...` reads a study: over NATS when given `--nats` (the running
 * coordinator answers), else the store; a store locked by a running coordinator is asked over
 * NATS too, at the URL that coordinator wrote beside its record (COORDINATOR_FILE).
 */
export interface StatusOptions {
  store: string;
  nats?: string;
}

/** Written into the store directory by `optimer run` while its coordinator runs. */
export const COORDINATOR_FILE = 'coordinator.json';

interface CoordinatorFile {
  natsUrl: string;
  pid: number;
  host: string;
  study: string;
  startedAt: string;
}

export function storeDbPath(storeDir: string): string {
  return join(storeDir, 'db');
}

export async function withStore<T>(storeDir: string, fn: (s: StudyStore) => Promise<T>): Promise<T> {
  // reading: a mistyped --store is NOT_FOUND, not a new empty store
  const store = await openLevelStore(storeDbPath(storeDir), { create: false });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Tells readers of the store how to reach its coordinator; returns the function that removes the note. */
export async function writeCoordinatorFile(storeDir: string, natsUrl: string, study: string): Promise<() => Promise<void>> {
  const path = join(storeDir, COORDINATOR_FILE);
  const note: CoordinatorFile = { natsUrl, pid: process.pid, host: hostname(), study, startedAt: new Date().toISOString() };
  await writeFile(path, `${JSON.stringify(note, null, 2)}\n`);
  return async () => {
    // only our own note: a later coordinator of the same store may have written its own
    const now = await readCoordinatorFile(storeDir);
    if (now?.pid === process.pid && now.startedAt === note.startedAt) await rm(path, { force: true });
  };
}

async function readCoordinatorFile(storeDir: string): Promise<CoordinatorFile | undefined> {
  try {
    const v = JSON.parse(await readFile(join(storeDir, COORDINATOR_FILE), 'utf8')) as Partial<CoordinatorFile>;
    return typeof v?.natsUrl === 'string' && typeof v.pid === 'number' ? (v as CoordinatorFile) : undefined;
  } catch {
    return undefined;
  }
}

/** Where a reply came from, for the first line of the text output. */
export type StatusVia = { kind: 'nats'; url: string } | { kind: 'store'; path: string };

/** The store, or the NATS URL to ask instead when the store is locked by a running coordinator. */
async function fromStoreOrNats<T>(
  o: StatusOptions,
  fromStore: (s: StudyStore) => Promise<T>,
  fromNats: (url: string) => Promise<T>,
): Promise<{ value: T; via: StatusVia }> {
  if (o.nats) return { value: await fromNats(o.nats), via: { kind: 'nats', url: o.nats } };
  try {
    return { value: await withStore(o.store, fromStore), via: { kind: 'store', path: o.store } };
  } catch (e) {
    if (!isStoreInUse(e)) throw e;
    const note = await readCoordinatorFile(o.store);
    if (!note)
      throw new OptimerError('STORE', `${(e as Error).message}; ask it over NATS with --nats URL (the URL its workers use)`, { cause: e });
    return { value: await fromNats(note.natsUrl), via: { kind: 'nats', url: note.natsUrl } };
  }
}

/** A study's status with every trial, or one page of them (`{ offset: 0, limit: 0 }`: the summary alone). */
export async function readStatus(
  o: StatusOptions,
  name: string,
  page?: { offset: number; limit: number },
): Promise<{ status: StudyStatus; via: StatusVia }> {
  const { value, via } = await fromStoreOrNats(
    o,
    (s) => statusFromStore(s, name, page),
    (url) => (page ? requestStudyStatus(url, name, page) : requestFullStatus(url, name)),
  );
  return { status: value, via };
}

/** The studies of the store, or (over NATS) of every running coordinator. */
export async function readList(o: StatusOptions): Promise<{ studies: StudyListItem[]; via: StatusVia }> {
  const { value, via } = await fromStoreOrNats(o, listFromStore, (url) => requestStudyList(url));
  return { studies: value, via };
}
