#!/usr/bin/env node
// meshllm command-line entry. Needs Node >= 22 (libp2p 3); `npm ci` installs one into
// node_modules/.bin, which npm scripts and npx put first on PATH.
const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  process.stderr.write(`meshllm: Node ${process.versions.node} is too old: Node >= 22 is required (run through npx / npm, which use the Node 22 that npm ci installs into node_modules/.bin)\n`)
  process.exit(2)
}
const { main } = await import('../dist/src/cli/main.js')
await main(process.argv.slice(2))
