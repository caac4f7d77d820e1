import type { JetStreamClient, KV, QueuedIterator, KvEntry } from 'nats';
import { Bitfield, HOLDER_TTL_MS, holderCodec, holderKey, HOLDERS_BUCKET, type Logger } from '../../shared/index.js';

/** Entries are refreshed every third of their TTL, and on change. */
const REFRESH_MS = HOLDER_TTL_MS / 3;
/** Announcements of new pieces are batched this long (a piece arrives every few ms on a fast link). */
const ANNOUNCE_DELAY_MS = 100;
/** The longest a fetch waits for the tracker's current holders before starting without them. */
const INITIAL_HOLDERS_MS = 2000;

export interface PeerHolder {
  address: string;
  have: Bitfield;
  /** the pieces it is fetching from the seeders now (none when absent) */
  seeding?: Bitfield;
}

/** What the cache needs from a tracker: kept apart from NATS so the cache can be used without one. */
export interface PeerTracker {
  /** The peers holding pieces of a blob (never this worker itself), as last heard. */
  holders(sha256: string): PeerHolder[];
  /** Follows a blob's holders until the returned function is called. */
  follow(sha256: string): Promise<() => void>;
  /** Says (soon) which pieces of a blob this worker holds, and which it is fetching from the seeders. */
  announce(sha256: string, have: Bitfield, seeding?: Bitfield): void;
  /** Says this worker holds nothing of a blob any more (evicted, or a failed transfer's file is not served). */
  withdraw(sha256: string): void;
  /** Called whenever a followed blob's holders change. */
  onChange(listener: () => void): void;
}

/**
 * The tracker: who holds which piece, in a JetStream key-value bucket (`optimer_holders`, key
 * `<sha256>.<holder id hex>`, value a Holder message). Entries expire after HOLDER_TTL_MS unless
 * refreshed, so a worker that dies stops being asked; a worker that leaves deletes its own.
 */
export class NatsHolders implements PeerTracker {
  private readonly mine = new Map<string, { have: Bitfield; seeding: Bitfield | undefined }>();
  private readonly dirty = new Set<string>();
  private readonly seen = new Map<string, Map<string, { holder: PeerHolder; at: number }>>();
  private readonly listeners: (() => void)[] = [];
  private readonly watches = new Set<QueuedIterator<KvEntry>>();
  private flushTimer: NodeJS.Timeout | undefined;
  /** puts and deletes of this worker's entries, in order: a withdrawal never overtaken by an earlier put */
  private writes: Promise<void> = Promise.resolve();
  private readonly refresh: NodeJS.Timeout;
  private closed = false;

  private constructor(
    private readonly kv: KV,
    private readonly selfHex: string,
    private readonly address: string,
    private readonly log: Logger,
  ) {
    this.refresh = setInterval(() => {
      for (const sha of this.mine.keys()) this.dirty.add(sha);
      void this.flush();
    }, REFRESH_MS);
    this.refresh.unref();
  }

  static async open(js: JetStreamClient, selfHex: string, address: string, log: Logger): Promise<NatsHolders> {
    // a coordinator creates the bucket with its copies (--nats-replicas); one copy when a worker is first
    const kv = await js.views.kv(HOLDERS_BUCKET, { ttl: HOLDER_TTL_MS, history: 1 });
    return new NatsHolders(kv, selfHex, address, log);
  }

  holders(sha256: string): PeerHolder[] {
    const now = Date.now();
    const out: PeerHolder[] = [];
    for (const { holder, at } of this.seen.get(sha256)?.values() ?? []) if (now - at < HOLDER_TTL_MS) out.push(holder);
    return out;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  async follow(sha256: string): Promise<() => void> {
    const table = new Map<string, { holder: PeerHolder; at: number }>();
    this.seen.set(sha256, table);
    // the first pick must see the holders already there, or it would go to the seeders
    let initialized!: () => void;
    const ready = new Promise<void>((resolve) => (initialized = resolve));
    let stopped = false;
    let watch: QueuedIterator<KvEntry> | undefined;
    // set up aside: a tracker slow to answer (a JetStream cluster electing a leader after losing a
    // node: a request waits out its 5 s timeout) holds the fetch INITIAL_HOLDERS_MS at most
    void this.kv
      .watch({ key: `${sha256}.*`, initializedFn: () => initialized() })
      .then(async (w) => {
        if (stopped || this.closed) return w.stop();
        watch = w;
        this.watches.add(w);
        for await (const e of w) {
          const hex = e.key.slice(sha256.length + 1);
          if (hex === this.selfHex) continue;
          if (e.operation !== 'PUT') table.delete(hex);
          else {
            try {
              const h = holderCodec.decode(e.value, `holder ${e.key}`);
              if (h.address !== this.address) {
                const holder: PeerHolder = { address: h.address, have: new Bitfield(h.pieces, h.have) };
                if (h.seeding.length > 0) holder.seeding = new Bitfield(h.pieces, h.seeding);
                table.set(hex, { holder, at: e.created.getTime() });
              }
            } catch (err) {
              this.log.warn({ err: (err as Error).message }, 'ignoring a malformed holder entry');
            }
          }
          for (const l of this.listeners) l();
        }
      })
      .catch((err: unknown) => {
        this.log.debug({ sha256, err: (err as Error).message }, 'cannot follow the holders of a blob; fetching from the seeders');
        initialized();
      });
    await Promise.race([ready, new Promise((r) => setTimeout(r, INITIAL_HOLDERS_MS).unref())]);
    return () => {
      stopped = true;
      watch?.stop();
      if (watch) this.watches.delete(watch);
      this.seen.delete(sha256);
    };
  }

  announce(sha256: string, have: Bitfield, seeding?: Bitfield): void {
    if (this.closed) return;
    this.mine.set(sha256, { have, seeding });
    this.dirty.add(sha256);
    this.flushTimer ??= setTimeout(() => void this.flush(), ANNOUNCE_DELAY_MS);
  }

  withdraw(sha256: string): void {
    if (!this.mine.delete(sha256)) return;
    this.dirty.delete(sha256);
    if (this.closed) return;
    this.writes = this.writes.then(() =>
      this.kv.delete(holderKey(sha256, this.selfHex)).catch((e: unknown) => {
        // the entry expires after HOLDER_TTL_MS all the same; a peer asking meanwhile gets NOT_FOUND and asks another
        this.log.debug({ err: (e as Error).message }, 'holder withdrawal failed; the entry expires');
      }),
    );
  }

  private flush(): Promise<void> {
    this.flushTimer = undefined;
    this.writes = this.writes.then(() => this.put());
    return this.writes;
  }

  private async put(): Promise<void> {
    const shas = [...this.dirty];
    this.dirty.clear();
    for (const sha of shas) {
      const mine = this.mine.get(sha);
      if (!mine || this.closed) continue;
      const { have, seeding } = mine;
      try {
        await this.kv.put(
          holderKey(sha, this.selfHex),
          holderCodec.encode({
            address: this.address,
            pieces: have.size,
            have: have.bytes,
            seeding: seeding && seeding.count > 0 ? seeding.bytes : new Uint8Array(0),
          }),
        );
      } catch (e) {
        this.log.debug({ err: (e as Error).message }, 'holder announcement failed; the next refresh says it again');
      }
    }
  }

  /** A clean leave: this worker's entries are deleted, so peers stop asking it at once. */
  async leave(): Promise<void> {
    this.closed = true;
    clearInterval(this.refresh);
    clearTimeout(this.flushTimer);
    for (const w of this.watches) w.stop();
    this.watches.clear();
    await Promise.all([...this.mine.keys()].map((sha) => this.kv.delete(holderKey(sha, this.selfHex)).catch(() => undefined)));
    this.mine.clear();
  }
}
