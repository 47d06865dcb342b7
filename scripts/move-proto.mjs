// Second half of `npm run gen:proto`: protons writes proto/<name>.ts next to each .proto file;
// move those generated modules to src/wire/pb/<name>.ts, where the wire layer imports them.
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const from = join(root, 'proto')
const to = join(root, 'src', 'wire', 'pb')

await mkdir(to, { recursive: true })
const generated = (await readdir(from)).filter(name => name.endsWith('.ts'))
if (generated.length === 0) {
  throw new Error('no generated proto/*.ts found: run `protons proto/*.proto` first')
}
for (const name of generated) {
  // copy + remove rather than rename, so it also works across file systems
  await writeFile(join(to, name), await readFile(join(from, name)))
  await rm(join(from, name))
  console.info(`proto/${name} -> src/wire/pb/${name}`)
}
