import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, inject, it } from 'vitest';
import { useTempDir } from './helpers/temp.js';

const cli = inject('cli');
const tmp = useTempDir('sample');
const space = {
  direction: 'minimize',
  params: {
    x: { type: 'float', low: -1, high: 2 },
    lr: { type: 'float', low: 1e-5, high: 1e-1, log: true },
    n: { type: 'int', low: 1, high: 8, step: 1 },
    m: { type: 'categorical', choices: ['a', 'b'] },
  },
};

/** Drives `optimer sample` one line at a time, as an optimisation loop in another language would. */
function session(args: string[]) {
  const child = spawn(process.execPath, [cli, 'sample', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const errors: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => errors.push(l));
  const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return {
    next: async () => {
      const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no proposal within 10 s')), 10_000));
      const r = await Promise.race([out.next(), timeout]);
      return JSON.parse(r.value as string) as { trial: number; params: Record<string, unknown> };
    },
    send: (obj: unknown) => child.stdin!.write(`${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n`),
    end: () => child.stdin!.end(),
    errors,
    exit,
    kill: () => child.kill(),
  };
}

describe('optimer sample (ask/tell)', () => {
  it('sample - answers every valid line with one proposal, errors on stderr, exits when stdin closes', async () => {
    const file = join(tmp, 'space.json');
    await writeFile(file, JSON.stringify(space));
    const s = session(['--space', file, '--sampler', 'tpe', '--seed', '5']);
    try {
      const first = await s.next();
      expect(first.trial).toBe(0);
      expect(Object.keys(first.params).sort()).toEqual(['lr', 'm', 'n', 'x']);
      let pending = 0;
      for (let i = 1; i <= 15; i++) {
        if (i % 5 === 0) {
          s.send({ trial: i - 1, state: 'running' });
          pending = i - 1;
        } else s.send({ trial: i - 1, value: Math.random() });
        const p = await s.next();
        expect(p.trial).toBe(i);
        expect(p.params.x as number).toBeGreaterThanOrEqual(-1);
        expect(Number.isInteger(p.params.n)).toBe(true);
        expect(['a', 'b']).toContain(p.params.m);
      }
      // a pending trial can be told later; a told one cannot be told again; junk gets an error only
      s.send({ trial: pending, value: 0.5 });
      expect((await s.next()).trial).toBe(16);
      s.send({ trial: pending, value: 0.1 });
      s.send('not json');
      s.send({ trial: 999, value: 1 });
      s.send({ trial: 16, state: 'failed' });
      expect((await s.next()).trial).toBe(17);
      s.end();
      expect(await s.exit).toBe(0);
      expect(s.errors.map((e) => JSON.parse(e).error.message)).toEqual([
        `trial ${pending} is already complete`,
        expect.stringMatching(/^not valid JSON/),
        'trial 999 has not been proposed',
      ]);
    } finally {
      s.kill();
    }
  });

  it('sample - stops after --trials proposals; the same seed and answers reproduce', async () => {
    const file = join(tmp, 'space2.json');
    await writeFile(file, JSON.stringify(space));
    const run = async () => {
      const s = session(['--space', file, '--seed', '9', '--trials', '14']);
      const got = [await s.next()];
      for (let i = 0; i < 13; i++) {
        s.send({ trial: i, value: ((got[i]!.params.x as number) - 0.3) ** 2 });
        got.push(await s.next());
      }
      expect(await s.exit).toBe(0);
      return got;
    };
    const a = await run();
    expect(a).toHaveLength(14);
    expect(await run()).toEqual(a);
  });

  it('sample - an invalid space is refused naming the parameter', async () => {
    const file = join(tmp, 'bad.json');
    await writeFile(file, JSON.stringify({ params: { lr: { type: 'float', low: 0, high: 1, log: true } } }));
    const s = session(['--space', file]);
    expect(await s.exit).toBe(2);
    expect(s.errors.join('\n')).toMatch(/bad\.json: params\.lr: log scale needs low > 0/);
  });
});
