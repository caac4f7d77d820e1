/**
 * The transfer benchmarks, one command each:
 *   npm run bench:transfer -- link           gRPC shard transfer against raw TCP on loopback
 *   npm run bench:transfer -- distribution   pool distribution to N workers, peers against star (root)
 */
const which = process.argv[2];
if (which === 'link') await import('./link.js');
else if (which === 'distribution') await import('./distribution.js');
else {
  console.error('usage: npm run bench:transfer -- link | distribution [options]');
  process.exit(2);
}
