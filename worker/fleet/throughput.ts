/** How many recent trials the advertised throughput is measured over. */
const WINDOW = 20;

/** A worker's measured throughput over its recent trials (busy time only, so idle spells do not count). */
export class Throughput {
  private readonly recent: { ms: number; tokens: number; evalMs: number }[] = [];

  add(ms: number, tokens: number, evalMs: number): void {
    this.recent.push({ ms, tokens, evalMs });
    if (this.recent.length > WINDOW) this.recent.shift();
  }

  get trialsPerMinute(): number {
    const ms = this.recent.reduce((s, r) => s + r.ms, 0);
    return ms > 0 ? (this.recent.length * 60_000) / ms : 0;
  }

  get tokensPerSecond(): number {
    const ms = this.recent.reduce((s, r) => s + r.evalMs, 0);
    return ms > 0 ? (this.recent.reduce((s, r) => s + r.tokens, 0) * 1000) / ms : 0;
  }
}
