// CLI: removes testbed leftovers. `--prefix P` cleans one run; otherwise every prefix whose owner
// process is gone and that is older than `--older-than` minutes (default 10; 0 = any age).
// `--ignore-owner` also takes prefixes of live processes (age alone decides).
import { cleanupPrefix, cleanupStale, PREFIX_ROOT } from './testbed';

async function main(argv: string[]): Promise<number> {
  let prefix: string | undefined;
  let olderThanMinutes = 10;
  let ignoreOwner = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--prefix') prefix = argv[++i];
    else if (a === '--older-than') olderThanMinutes = Number(argv[++i]);
    else if (a === '--ignore-owner') ignoreOwner = true;
    else {
      process.stderr.write(`usage: cleanup [--prefix ${PREFIX_ROOT}-…] [--older-than MIN] [--ignore-owner]\n`);
      return 2;
    }
  }
  if (prefix !== undefined) {
    const removed = await cleanupPrefix(prefix);
    process.stdout.write(`cleanup: removed ${removed.length} namespaces of ${prefix}\n`);
    return 0;
  }
  if (!Number.isFinite(olderThanMinutes) || olderThanMinutes < 0) {
    process.stderr.write('cleanup: --older-than needs a number of minutes\n');
    return 2;
  }
  const cleaned = await cleanupStale(`^${PREFIX_ROOT}-`, { olderThanMinutes, ignoreOwner });
  if (cleaned.length > 0) process.stdout.write(`cleanup: removed stale testbeds ${cleaned.join(', ')}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
