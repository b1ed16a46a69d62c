#!/usr/bin/env node
// Coverage floor (part of `npm test`): reads tap's json-summary of the run that just finished
// (.tap/report/coverage-summary.json: src/ only, mapped from dist/ through source maps) and fails when
// a total falls below package.json's "coverageFloor" or a src/ module with runtime code was never loaded
// by any test (tap only reports files that ran, so an unloaded module would not lower the totals).
// What the numbers measure and how to move the floor: docs/HACKING.md "Coverage".
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const summaryFile = path.join(root, '.tap/report/coverage-summary.json');
const floor = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).coverageFloor;
if (!floor) {
  console.log('coverage: package.json has no "coverageFloor"');
  process.exit(1);
}
if (!fs.existsSync(summaryFile)) {
  console.log(`coverage: no report at ${path.relative(root, summaryFile)} (did tap run with coverage on?)`);
  process.exit(1);
}
const summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));

let failed = 0;
const parts = [];
for (const metric of ['lines', 'branches', 'functions']) {
  const got = summary.total[metric].pct;
  const want = floor[metric];
  parts.push(`${metric} ${got}% (floor ${want}%)`);
  if (typeof want === 'number' && got < want) {
    console.log(`coverage: ${metric} ${got}% is below the floor ${want}%: add tests, or see docs/HACKING.md "Coverage"`);
    failed++;
  }
}

// A compiled module with only the CommonJS preamble is type-only: nothing to cover.
const runtime = (js) =>
  js
    .split('\n')
    .map((l) => l.trim())
    .some(
      (l) =>
        l !== '' &&
        l !== '"use strict";' &&
        !l.startsWith('Object.defineProperty(exports, "__esModule"') &&
        !l.startsWith('//# sourceMappingURL='),
    );
const walk = (dir) =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
const reported = new Set(Object.keys(summary).filter((k) => k !== 'total'));
for (const src of walk(path.join(root, 'src')).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))) {
  if (reported.has(src)) continue;
  const js = path.join(root, 'dist', path.relative(root, src)).replace(/\.ts$/, '.js');
  if (fs.existsSync(js) && !runtime(fs.readFileSync(js, 'utf8'))) continue;
  console.log(`coverage: ${path.relative(root, src)} was never loaded by a test`);
  failed++;
}

console.log(`coverage: ${parts.join(', ')}: ${failed === 0 ? 'ok' : 'FAILED'}`);
process.exit(failed === 0 ? 0 : 1);
