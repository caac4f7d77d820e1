import { join } from 'node:path';
import { Coordinator } from '../../coordinator/coordinator.js';
import { MemoryStudyStore } from '../../coordinator/store/memory-store.js';
import { loadStudyConfig } from '../../coordinator/study/config.js';
import type { FamilyFiles } from '../../shared/family/build.js';
import { silentLogger } from '../../shared/logging.js';
import { writeStudyConfig } from './study.js';

/**
 * A coordinator in the test's own process for a study of `trials` over the family's `poolDir`
 * (no baselines), its config written under `dir`; `closers` gets its close.
 */
export async function startInProcessStudy(
  o: { family: FamilyFiles; natsUrl: string; dir: string; closers: (() => Promise<unknown>)[] },
  name: string,
  poolDir: string,
  trials: number,
  store = new MemoryStudyStore(),
): Promise<Coordinator> {
  const coordinator = await Coordinator.start({
    config: await loadStudyConfig(
      await writeStudyConfig(join(o.dir, `${name}.json`), o.family, poolDir, { name, trials, baselines: false }),
    ),
    store,
    natsUrl: o.natsUrl,
    log: silentLogger(),
  });
  o.closers.push(() => coordinator.close());
  return coordinator;
}
