/**
 * Options and defaults several commands share, declared once. Light on purpose: every
 * command module imports it, and `meshllm --help` loads every command module.
 */
import { flag, required, str, strs } from '../args.js'

export const BOOTSTRAP = strs('a mesh peer to connect to: multiaddr ending in /p2p/<peer id>')
export const GOVERNANCE = str('governance file of the mesh (meshllm governance init)', { defaultDescription: 'the built-in DEVELOPMENT governance: public keys, loopback only' })
export const JSON_OUT = flag('print one JSON object instead of text')
export const TOKENIZER = str('model whose tokenizer this router uses (bundled name, .gguf path or URI)', { defaultDescription: 'meshtest-c' })
/** how this router asks experts to write frames (RouterOptions.frames) */
export const FRAMES = str('how the experts write frames: compact (one byte per log-probability, ≈ 600 bytes per frame) or full (two bytes, ≈ 870 bytes)', { choices: ['compact', 'full'], defaultDescription: 'compact' })
export const KEY = strs('keyholder key file (meshllm keys generate)')

/** what every command that publishes a keyholder message takes (halt, resume, vote, phase) */
export const PUBLISH = {
  key: required(KEY),
  bootstrap: required(BOOTSTRAP),
  governance: GOVERNANCE,
  json: JSON_OUT
}
