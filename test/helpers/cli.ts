/** Runs bin/meshllm.js as a user does: exit code, stdout, stderr. */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const BIN = fileURLToPath(new URL('../../../bin/meshllm.js', import.meta.url))

export interface CliRun { code: number, stdout: string, stderr: string }

export async function meshllm (args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<CliRun> {
  return await new Promise(resolve => {
    execFile(process.execPath, [...nodeArgs, BIN, ...args], { timeout: 60_000, env: { ...process.env, ...env } }, (err: any, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}
