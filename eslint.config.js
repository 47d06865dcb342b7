// Lint with `npm run lint` (npm test runs it). The linter lives in tools/lint, its own install:
// typescript-eslint needs TypeScript 5 while the project builds with TypeScript 7.
import neostandard from './tools/lint/node_modules/neostandard/index.js'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'native/**', 'tools/**', 'node_modules/**', 'src/**/pb/*.ts'] }),
  {
    rules: {
      // `void promise` marks a deliberate fire-and-forget whose errors are handled inside
      'no-void': ['error', { allowAsStatement: true }],
      // a `let` that closures read before its one assignment (a component created later) cannot be const
      'prefer-const': ['error', { destructuring: 'all', ignoreReadBeforeAssign: true }]
    }
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // assert.throws(() => { new Thing(bad) }) is how a constructor's refusal is tested
      'no-new': 'off'
    }
  }
]
