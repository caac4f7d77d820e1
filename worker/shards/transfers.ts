/** Blob transfers under way, for the worker's status and its log: bytes, rate, where they came from. */

/** One transfer as the status shows it (the wire's `Transfer`). */
export interface TransferView {
  /** the blob's sha256, first 12 hex digits */
  blob: string;
  bytes: number;
  /** held now, pieces found in a partial file included */
  doneBytes: number;
  /** since it started, pieces found in a partial file not counted */
  bytesPerSecond: number;
  fromPeers: number;
  /** from the study's seeders (the coordinator) */
  fromSeeders: number;
  /** peers it has had pieces from */
  peers: number;
  seconds: number;
}

/** How many transfers a status lists (a worker fetches one blob at a time; a few is plenty). */
export const MAX_LISTED_TRANSFERS = 16;

export class Transfer {
  private readonly startedMs = performance.now();
  private fetched = 0;
  fromPeers = 0;
  fromSeeders = 0;
  private readonly peers = new Set<string>();

  constructor(
    readonly sha256: string,
    readonly bytes: number,
    /** bytes already held when it started (verified pieces of an interrupted transfer) */
    private resumedBytes = 0,
  ) {}

  resumed(bytes: number): void {
    this.resumedBytes += bytes;
  }

  got(bytes: number, from: { seeder: boolean; address: string }): void {
    this.fetched += bytes;
    if (from.seeder) this.fromSeeders += bytes;
    else {
      this.fromPeers += bytes;
      this.peers.add(from.address);
    }
  }

  /** Bytes of a failed whole-blob attempt: the next seeder sends them again. */
  discard(bytes: number): void {
    this.fetched -= bytes;
    this.fromSeeders -= bytes;
  }

  view(): TransferView {
    const seconds = (performance.now() - this.startedMs) / 1000;
    return {
      blob: this.sha256.slice(0, 12),
      bytes: this.bytes,
      doneBytes: Math.min(this.bytes, this.resumedBytes + this.fetched),
      bytesPerSecond: seconds > 0 ? this.fetched / seconds : 0,
      fromPeers: this.fromPeers,
      fromSeeders: this.fromSeeders,
      peers: this.peers.size,
      seconds,
    };
  }
}

/** The transfers in flight, oldest first. */
export class Transfers {
  private readonly active = new Set<Transfer>();

  start(sha256: string, bytes: number): Transfer {
    const t = new Transfer(sha256, bytes);
    this.active.add(t);
    return t;
  }

  end(t: Transfer): void {
    this.active.delete(t);
  }

  list(): TransferView[] {
    return [...this.active].slice(0, MAX_LISTED_TRANSFERS).map((t) => t.view());
  }
}

/** "1 peer", "3 peers". */
export function peersText(n: number): string {
  return `${n} peer${n === 1 ? '' : 's'}`;
}
