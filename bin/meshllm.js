#!/usr/bin/env node
// meshllm command-line entry. Needs Node >= 22 (libp2p 3); `npm ci` installs one into
// node_modules/.bin, which npm scripts and npx put first on PATH.
const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  process.stderr.write(`meshllm: Node ${process.versions.node} is too old: Node >= 22 is required (run through npx / npm, which use the Node 22 that npm ci installs into node_modules/.bin)\n`)
  process.exit(2)
}
// libp2p's loggers (debug) otherwise ask isatty(2) for every logger they create: one per
// stream, thousands a minute on a busy node. DEBUG_COLORS=1 brings colours back.
process.env.DEBUG_COLORS ??= '0'
const { main } = await import('../dist/src/cli/main.js')
await main(process.argv.slice(2))
