// eslint (flat config): typescript-eslint's strict, type-aware rule set over the TypeScript tree.
// Run by scripts/lint.sh (part of `npm test`). Every rule turned off or relaxed below says why.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'prebuilds/', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      // Types come from tsconfig.lint.json = tsconfig.json + noUncheckedIndexedAccess: the tree writes `a[i]!`
      // where an index is known to be in range, and lint judges those assertions as that option would.
      parserOptions: { project: './tsconfig.lint.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // `!` after an index or Map lookup whose presence the surrounding code establishes is the tree's
      // convention (typed arrays in the hot path, parsed regex groups); a runtime check would add a branch.
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Numbers in messages and log lines are the normal case; objects, nullish and unknown stay flagged.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // `() => this.stop()` as a callback is the idiom for void callbacks; elsewhere a void value used as a
      // value stays flagged.
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      // An async implementation of a Promise-returning interface (RouteNetlink, Registry, tap callbacks) turns
      // a synchronous throw into a rejection even when it awaits nothing.
      '@typescript-eslint/require-await': 'off',
      // `const { time: _t, ...rest } = j` drops fields from a copy: the named ones are unused on purpose.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
    },
  },
  {
    // The hot loop indexes its typed arrays unchecked (`totals[Ctr.txBytes] += n`): compiled without
    // noUncheckedIndexedAccess, so only under the lint types would those be `number | undefined` operands.
    files: ['src/dataplane/packet-loop.ts'],
    rules: { '@typescript-eslint/restrict-plus-operands': 'off' },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // tap queues `t.test(...)` subtests and awaits them itself (its documented idiom); other promises in
      // tests (t.rejects, fixtures) stay flagged.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafePromises: [{ from: 'package', package: '@tapjs/core', name: 'PromiseWithSubtest' }] },
      ],
    },
  },
);
