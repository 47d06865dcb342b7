// Second half of `npm run gen:proto`: protons writes proto/<name>.ts next to each .proto file;
// move each generated module to the source folder that imports it.
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
/** generated module → destination folder */
const destinations = {
  'infer.ts': 'src/wire/pb',
  'record.ts': 'src/wire/pb',
  'generate.ts': 'src/router/pb'
}

const generated = (await readdir(join(root, 'proto'))).filter(name => name.endsWith('.ts'))
if (generated.length === 0) throw new Error('no generated proto/*.ts found: run `protons proto/*.proto` first')
for (const name of generated) {
  const dir = destinations[name]
  if (dir == null) throw new Error(`proto/${name}: no destination, add one to scripts/move-proto.mjs`)
  await mkdir(join(root, dir), { recursive: true })
  // copy + remove rather than rename, so it also works across file systems
  await writeFile(join(root, dir, name), await readFile(join(root, 'proto', name)))
  await rm(join(root, 'proto', name))
  console.info(`proto/${name} -> ${dir}/${name}`)
}
