import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import type {} from 'vitest';
import { buildFamily, writeFamilyVariant, type FamilyFiles } from '../../shared/family/build.js';

declare module 'vitest' {
  export interface ProvidedContext {
    family: FamilyFiles;
    familyFp16: FamilyFiles;
    familyExternal: FamilyFiles;
    cli: string;
  }
}

/**
 * Once per run: compile the CLI (tests spawn it as users do) and generate the model family in
 * three storage formats. Everything lives in one temp dir removed at the end.
 */
export default async function setup(project: TestProject): Promise<() => void> {
  const root = join(import.meta.dirname, '..', '..');
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], {
    stdio: 'inherit',
  });
  const dir = mkdtempSync(join(tmpdir(), 'optimer-test-family-'));
  const family = await buildFamily(join(dir, 'fp32'), { seed: 1 });
  project.provide('family', family);
  project.provide('familyFp16', await writeFamilyVariant(family, join(dir, 'fp16'), { dtype: 'float16' }));
  project.provide('familyExternal', await writeFamilyVariant(family, join(dir, 'external'), { externalData: true }));
  project.provide('cli', join(root, 'dist', 'cli', 'main.js'));
  return () => rmSync(dir, { recursive: true, force: true });
}
