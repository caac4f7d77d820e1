import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { type Logger, OptimerError, packageRoot, studyNameSchema } from '../../shared/index.js';
import type { StudyListItem, StudyStatus } from '../status/status.js';

/** Where the dashboard listens unless told otherwise: loopback only. */
export const DEFAULT_DASHBOARD_HOST = '127.0.0.1';
export const DEFAULT_DASHBOARD_PORT = 8710;
/** A comment line on every open event stream this often, so proxies and browsers keep it open, ms. */
const SSE_KEEPALIVE_MS = 15_000;
/** Without change notifications, how often the list is read to find changes, ms. */
const POLL_MS = 2000;
/** Event streams open at once; more are refused (each holds a socket). */
const MAX_STREAMS = 64;

/** What the dashboard shows: the studies and each one's status, from a coordinator, a store or NATS. */
export interface DashboardSource {
  list(): Promise<StudyListItem[]>;
  status(study: string): Promise<StudyStatus>;
  /** calls back when a study changes; without it the dashboard polls the list */
  subscribe?(onChange: (study: string, reason: string) => void): () => void;
}

export interface DashboardOptions {
  source: DashboardSource;
  host?: string;
  /** 0: any free port */
  port?: number;
  /** when set, every request for data must carry it (`Authorization: Bearer …`, or `?token=` for the event stream) */
  token?: string;
  log: Logger;
}

/** The page's own files (no build step, no CDN) and the chart library's, by URL path. */
const PAGE_DIR = join(packageRoot, 'coordinator', 'dashboard', 'page');
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.iife.min.js'));
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: join(PAGE_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: join(PAGE_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: join(PAGE_DIR, 'style.css'), type: 'text/css; charset=utf-8' },
  '/uPlot.min.js': { file: join(UPLOT_DIR, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/uPlot.min.css': { file: join(UPLOT_DIR, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

const SECURITY_HEADERS = {
  // the page loads nothing but its own files and talks to nothing but this server
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; base-uri 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
};

/**
 * The web dashboard: a static page (uPlot charts, bundled), JSON from a DashboardSource
 * (`/api/studies`, `/api/studies/NAME`), and a server-sent event stream (`/api/events`) that
 * says which study changed, so the page reloads that study's status without reloading itself.
 * Read-only: nothing on it changes a study. Loopback unless told otherwise; a token when shared.
 */
export class DashboardServer {
  private readonly streams = new Set<ServerResponse>();
  private readonly stops: (() => void)[] = [];
  private closed = false;

  private constructor(
    private readonly server: Server,
    private readonly o: DashboardOptions,
    /** the URL the page is at (with the token, when there is one) */
    readonly url: string,
  ) {}

  static async start(o: DashboardOptions): Promise<DashboardServer> {
    const host = o.host ?? DEFAULT_DASHBOARD_HOST;
    const port = o.port ?? DEFAULT_DASHBOARD_PORT;
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new OptimerError(
            'SETUP',
            `dashboard: cannot listen on ${host}:${port} (${e.code ?? e.message})${e.code === 'EADDRINUSE' ? '; give another --dashboard port' : ''}`,
          ),
        ),
      );
      server.listen(port, host, () => resolve());
    });
    const bound = server.address();
    const actual = typeof bound === 'object' && bound ? bound.port : port;
    const shown = host.includes(':') ? `[${host}]` : host;
    const url = `http://${shown}:${actual}/${o.token ? `?token=${encodeURIComponent(o.token)}` : ''}`;
    const d = new DashboardServer(server, o, url);
    server.on('request', (req, res) => void d.handle(req, res));
    d.watch();
    return d;
  }

  /** The port it listens on. */
  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stop of this.stops) stop();
    for (const res of this.streams) res.end();
    this.streams.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Tells every open stream that a study changed. */
  private notify(study: string, reason: string): void {
    const data = JSON.stringify({ study, reason, at: new Date().toISOString() });
    for (const res of this.streams) res.write(`event: change\ndata: ${data}\n\n`);
  }

  private watch(): void {
    const { source } = this.o;
    if (source.subscribe) {
      this.stops.push(source.subscribe((study, reason) => this.notify(study, reason)));
      return;
    }
    // no notifications (a store, or NATS): compare what the list says every few seconds
    let last = new Map<string, string>();
    let busy = false;
    const timer = setInterval(() => {
      if (busy || this.streams.size === 0) return;
      busy = true;
      source
        .list()
        .then((studies) => {
          const now = new Map(studies.map((s) => [s.study, JSON.stringify([s.state, s.phase, s.progress, s.trials, s.updatedAt, s.best])]));
          for (const [name, sig] of now) if (last.size > 0 && last.get(name) !== sig) this.notify(name, 'changed');
          last = now;
        })
        .catch((e) => this.o.log.debug({ err: (e as Error).message }, 'dashboard: could not read the studies'))
        .finally(() => {
          busy = false;
        });
    }, POLL_MS);
    timer.unref();
    this.stops.push(() => clearInterval(timer));
  }

  private authorized(req: IncomingMessage, url: URL): boolean {
    const { token } = this.o;
    if (!token) return true;
    const header = req.headers.authorization ?? '';
    const given = header.startsWith('Bearer ') ? header.slice(7) : (url.searchParams.get('token') ?? '');
    const a = Buffer.from(given);
    const b = Buffer.from(token);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://dashboard');
    } catch {
      return send(res, 400, { error: 'bad request URL' });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'the dashboard is read-only: GET only' });
    // the page's own files are code, not data (and a browser fetches them without the token);
    // everything under /api needs it
    if (url.pathname.startsWith('/api/') && !this.authorized(req, url)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="optimer"');
      return send(res, 401, { error: 'this dashboard needs its token (?token=… or Authorization: Bearer …)' });
    }
    const path = url.pathname;
    try {
      const asset = ASSETS[path];
      if (asset) {
        const body = await readFile(asset.file);
        res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': asset.type, 'Content-Length': body.length });
        return void res.end(req.method === 'HEAD' ? undefined : body);
      }
      if (path === '/api/studies') return send(res, 200, { studies: await this.o.source.list() });
      if (path.startsWith('/api/studies/')) {
        const name = studyNameSchema.safeParse(decodeURIComponent(path.slice('/api/studies/'.length)));
        if (!name.success) return send(res, 400, { error: `study name: ${name.error.issues[0]?.message ?? 'invalid'}` });
        return send(res, 200, await this.o.source.status(name.data));
      }
      if (path === '/api/events') return this.stream(req, res);
      if (path === '/favicon.ico') return void res.writeHead(204, SECURITY_HEADERS).end();
      return send(res, 404, { error: `no such page: ${path}` });
    } catch (e) {
      const err = e instanceof OptimerError ? e : new OptimerError('RUNTIME', (e as Error).message);
      if (!(e instanceof OptimerError)) this.o.log.warn({ err: err.message, path }, 'dashboard: a request failed');
      return send(res, err.code === 'NOT_FOUND' ? 404 : 500, { error: err.message, code: err.code });
    }
  }

  private stream(req: IncomingMessage, res: ServerResponse): void {
    if (this.streams.size >= MAX_STREAMS) {
      send(res, 503, { error: `too many open dashboards (${MAX_STREAMS})` });
      return;
    }
    res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': 'text/event-stream', Connection: 'keep-alive' });
    res.write('retry: 2000\n\n');
    this.streams.add(res);
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), SSE_KEEPALIVE_MS);
    keepalive.unref();
    req.on('close', () => {
      clearInterval(keepalive);
      this.streams.delete(res);
    });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}
