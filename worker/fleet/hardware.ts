import { execFile } from 'node:child_process';
import { cpus, totalmem } from 'node:os';

/** The most a query of nvidia-smi or the operator's idle command may take, ms. */
const QUERY_TIMEOUT_MS = 5000;

/** A GPU is idle when its utilisation and used memory are at most these (others' work, not ours). */
export const IDLE_MAX_UTILIZATION_PERCENT = 10;
export const IDLE_MAX_MEMORY_USED_MIB = 1024;

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: QUERY_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code: err && code === 0 ? 1 : code, stdout: stdout ?? '' });
    });
  });
}

/** The first GPU as nvidia-smi names it, or null where nvidia-smi is absent or fails. */
export async function queryGpu(): Promise<{ name: string; memoryGb: number } | null> {
  const r = await run('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits']);
  const line = r.code === 0 ? r.stdout.split('\n')[0]?.trim() : undefined;
  if (!line) return null;
  const [name, mib] = line.split(',').map((s) => s.trim());
  const memoryGb = Number(mib) / 1024;
  return name && Number.isFinite(memoryGb) ? { name, memoryGb } : null;
}

/** What this machine is, unless the operator said: the GPU where nvidia-smi answers, else the CPU and RAM. */
export async function detectDevice(): Promise<{ deviceName: string; memoryGb: number }> {
  const gpu = await queryGpu();
  if (gpu) return { deviceName: gpu.name, memoryGb: gpu.memoryGb };
  return { deviceName: cpus()[0]?.model.trim() || 'cpu', memoryGb: totalmem() / 2 ** 30 };
}

/**
 * Whether the GPU is idle: the operator's command (run by /bin/sh; exit 0 = idle) when given,
 * else nvidia-smi's utilisation and used memory. Null: there is nothing to ask.
 */
export type IdleCheck = () => Promise<boolean>;

export async function idleCheck(command: string | undefined): Promise<IdleCheck | null> {
  if (command) return async () => (await run('/bin/sh', ['-c', command])).code === 0;
  const args = ['--query-gpu=utilization.gpu,memory.used', '--format=csv,noheader,nounits'];
  if ((await run('nvidia-smi', args)).code !== 0) return null;
  return async () => {
    const r = await run('nvidia-smi', args);
    if (r.code !== 0) return false; // cannot tell: leave the GPU to its owner
    return r.stdout
      .split('\n')
      .filter((l) => l.trim())
      .every((l) => {
        const [util, used] = l.split(',').map((s) => Number(s.trim()));
        return util! <= IDLE_MAX_UTILIZATION_PERCENT && used! <= IDLE_MAX_MEMORY_USED_MIB;
      });
  };
}
