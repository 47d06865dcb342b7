#!/usr/bin/env node
// `npm run lint`: ESLint (neostandard) over the whole tree, then the import-cycle check.
// The linter has its own install in tools/lint (typescript-eslint needs TypeScript 5; the
// project builds with TypeScript 7); it is installed from its lock file on first use.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const lintDir = join(root, 'tools', 'lint')
const eslint = join(lintDir, 'node_modules', '.bin', 'eslint')

function run (cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts })
  if (r.status !== 0) process.exit(r.status ?? 1)
}

if (!existsSync(eslint)) {
  console.error('lint: installing the linter into tools/lint (npm ci, once)')
  run('npm', ['ci', '--no-audit', '--no-fund', '--silent'], { cwd: lintDir })
}
run(eslint, ['--max-warnings', '0', '.'])
run('npm', ['run', '--silent', 'lint:cycles'])
console.error('lint: clean (eslint neostandard, no import cycles)')
