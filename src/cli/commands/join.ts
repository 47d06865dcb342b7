/** `meshllm join`: serve a model as an expert of the mesh (implementation: src/cli/join.ts). */
import type { Argv } from 'yargs'
import { flag, int, required, str, strs, type Command, type Values } from '../args.js'
import { GENERATE_LIMITS } from '../../router/options.js'
import { BOOTSTRAP, FRAMES, GOVERNANCE } from './shared.js'
import { MAX_RESERVATIONS } from '../../node/reach-limits.js'
import { AUTO_MAX_SESSIONS, AUTO_MIN_SESSIONS, MAX_SESSIONS } from '../../expert/sessions.js'

export const join: Command = {
  command: 'join',
  describe: 'serve a model as an expert of the mesh (and route for --via callers)',
  builder: (y: Argv) => y
    .options({
      model: required(str('model: a bundled name (meshtest-a|b|c), a .gguf or .gguf.gz path, or a node-llama-cpp URI (hf:user/repo:quant, https://…)')),
      'local-model': str('a small model with the experts\' tokenizer for the \'local\' tail of the generations this node routes (--via, the API); none: the wire-only \'context\' tail', { defaultDescription: 'none' }),
      listen: strs('multiaddr to listen on', { defaultDescription: '/ip4/127.0.0.1/tcp/0' }),
      announce: strs('multiaddr to advertise instead of the listen addresses (a public node listening on 0.0.0.0: its public address)'),
      bootstrap: BOOTSTRAP,
      relay: flag('serve circuit relay v2 for the mesh (a publicly reachable node): per relayed connection 64 MiB and 30 min, 128 reservations, 60 new relayed connections per peer and minute'),
      'relay-reservations': int('relay reservations to hold, so peers can reach this node through mesh relays', 0, MAX_RESERVATIONS, { defaultDescription: 'auto: 1 with no public address of its own and a public bootstrap peer, else 0' }),
      'no-mdns': flag('no mDNS discovery on the LAN (default: on when listening on a non-loopback address)'),
      upnp: flag('map the listen port on the home gateway with UPnP (listen on a LAN address, e.g. /ip4/0.0.0.0/tcp/4001)'),
      'data-dir': str('identity, governance state, change log and tasks of this node (one process per directory)', { defaultDescription: '$MESHLLM_HOME/node, else $XDG_DATA_HOME/meshllm/node, else ~/.local/share/meshllm/node' }),
      threads: int('CPU threads for the model', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: 'cores − 1, at most 4' }),
      'max-sessions': str(`concurrent inference sessions, each a KV sequence of the context: an integer in [1, ${MAX_SESSIONS}], or auto (as many as fit in a quarter of the memory free after the model loads, RAM or VRAM: ${AUTO_MIN_SESSIONS}–${AUTO_MAX_SESSIONS})`, { defaultDescription: 'auto' }),
      'max-sessions-per-peer': int('sessions one remote peer is sure of (more only on idle slots, ended when another peer needs them)', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: '2' }),
      'queue-timeout': int('milliseconds an open waits for a free session slot before it is answered BUSY (0: at once, no queue; at most 20000, below a router\'s 30 s per request); at most 8 × max-sessions opens wait, 4 × max-sessions-per-peer of one peer\'s', 0, 20_000, { defaultDescription: '10000' }),
      'context-size': int('context size in tokens (capped at the model\'s training context)', 16, Number.MAX_SAFE_INTEGER, { defaultDescription: 'the model\'s training context' }),
      gpu: str('use a GPU node-llama-cpp finds (auto), or none (off; "false" is the same)', { choices: ['auto', 'off', 'false'], defaultDescription: 'auto' }),
      'idle-timeout': int('milliseconds after which an idle session is closed', 1, Number.MAX_SAFE_INTEGER, { defaultDescription: '60000' }),
      governance: GOVERNANCE,
      frames: FRAMES,
      'no-route': flag('do not route generations for other peers (/meshllm/generate off)'),
      'generate-token': str('file whose first line is the token --via callers must present (mode 600; else $MESHLLM_GENERATE_TOKEN; without either, routing is open)'),
      'generate-max-k': int('most experts per token a --via caller may ask for', 1, GENERATE_LIMITS.k[1], { defaultDescription: '8' }),
      grpc: str('serve the gRPC API on host:port'),
      http: str('serve the OpenAI-compatible HTTP API, /metrics and the dashboard on host:port'),
      'api-token-file': str('file holding the API token (mode 600; else $MESHLLM_API_TOKEN); required off loopback'),
      'api-token': str('refused: a token on the command line shows in `ps` (use --api-token-file or MESHLLM_API_TOKEN)'),
      'tls-cert': str('TLS certificate (PEM) for the APIs, with --tls-key; required off loopback'),
      'tls-key': str('TLS private key (PEM) for the APIs, with --tls-cert'),
      'insecure-behind-proxy': flag('serve the APIs off loopback without TLS: only behind a TLS-terminating reverse proxy')
    }),
  handler: async (argv: Values) => {
    const { join } = await import('../join.js')
    await join(argv)
  }
}
