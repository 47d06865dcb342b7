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
    // no `any` where it was taken out: a place that truly needs one says why on the line above
    // (`// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any: <why>`)
    files: [
      'src/agent/**/*.ts', 'src/aggregate/**/*.ts', 'src/api/**/*.ts', 'src/eval/**/*.ts', 'src/governance/**/*.ts',
      'src/tasks/**/*.ts', 'src/util/**/*.ts', 'src/wire/**/*.ts',
      'src/expert/model-host.ts', 'src/expert/native.ts', 'src/expert/tokenizer.ts'
    ],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error'
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
