// Import rules CI enforces (`npm run check`, from .ci/run). Layers point one way:
//   cli/ → coordinator/, worker/ → shared/ → proto/ (read at run time, not imported)
// and each layer is entered through its index.ts only. Tests and benchmarks may reach inside.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'an import that does not resolve is checked by no rule',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'a cycle makes load order (and the layering) fragile',
      from: {},
      to: { circular: true },
    },
    {
      name: 'shared-is-the-bottom',
      severity: 'error',
      comment: 'shared/ is what both sides use: it imports neither side nor the CLI',
      from: { path: '^shared/' },
      to: { path: '^(coordinator|worker|cli|bench|test)/' },
    },
    { name: 'coordinator-not-worker', severity: 'error', from: { path: '^coordinator/' }, to: { path: '^(worker|cli|bench|test)/' } },
    { name: 'worker-not-coordinator', severity: 'error', from: { path: '^worker/' }, to: { path: '^(coordinator|cli|bench|test)/' } },
    {
      name: 'cli-is-the-top',
      severity: 'error',
      comment: 'only tests and benchmarks may use the CLI modules',
      from: { pathNot: '^(cli|bench|test)/' },
      to: { path: '^cli/' },
    },
    ...['shared', 'coordinator', 'worker'].map((layer) => ({
      name: `enter-${layer}-through-its-index`,
      severity: 'error',
      comment: `other layers import ${layer}/ only through ${layer}/index.ts`,
      from: { path: '^(cli|coordinator|worker|shared)/', pathNot: `^${layer}/` },
      to: { path: `^${layer}/`, pathNot: `^${layer}/index\\.ts$` },
    })),
    {
      name: 'shared-internals-not-through-the-index',
      severity: 'error',
      comment: 'inside a layer, modules import each other directly: the index is for the other layers',
      from: { path: '^(shared|coordinator|worker)/(?!index\\.ts$)' },
      to: { path: '^$1/index\\.ts$' },
    },
    {
      name: 'coordinator-never-loads-onnxruntime',
      severity: 'error',
      comment: 'the coordinator process and config parsing must not load the ONNX Runtime binding',
      from: { path: '^coordinator/' },
      to: { path: 'onnxruntime-node', reachable: true },
    },
    {
      name: 'shared-never-loads-onnxruntime',
      severity: 'error',
      from: { path: '^shared/' },
      to: { path: 'onnxruntime-node', reachable: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      extensions: ['.ts', '.js'],
    },
  },
};
