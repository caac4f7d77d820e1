import type { z } from 'zod';

/** "where: path.to[2].field: problem" lines for every issue zod found, most specific first. */
export function formatIssues(where: string, error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.reduce<string>(
        (acc, key) => (typeof key === 'number' ? `${acc}[${key}]` : acc ? `${acc}.${String(key)}` : String(key)),
        '',
      );
      return `${where}: ${path || '(top level)'}: ${issue.message}`;
    })
    .join('\n');
}
