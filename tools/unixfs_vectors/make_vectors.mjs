// Makes tests/vectors/unixfs.json with the reference UnixFS importer (ipfs-unixfs-importer), set up
// as `ipfs add --cid-version 1` (kubo) imports: CIDv1, raw leaves, fixed 262144-byte chunks, the
// balanced layout with at most 174 links per node, a one-chunk file reduced to its raw leaf, dag-pb
// Links before Data. Inputs come from a formula the Python tests recompute: byte i of a file of
// seed s is (i * 31 + 7 + s) % 251. See README.md here for the command.
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { readFileSync, writeFileSync } from 'node:fs'

const versionOf = (pkg) => JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url))).version
const CHUNK = 262144
const LINKS = 174
const OPTIONS = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: CHUNK }),
  layout: balanced({ maxChildrenPerNode: LINKS }),
  wrapWithDirectory: false
}
const OPTION_TEXT = {
  cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true, chunker: `fixedSize({ chunkSize: ${CHUNK} })`,
  layout: `balanced({ maxChildrenPerNode: ${LINKS} })`, wrapWithDirectory: false
}

const PATTERN = 251
function content (size, seed = 0) {
  // streamed in 1 MiB pieces, so the importer sees pieces that do not align with its chunks
  return (function * () {
    const piece = 1 << 20
    for (let start = 0; start < size; start += piece) {
      const n = Math.min(piece, size - start)
      const out = new Uint8Array(n)
      for (let j = 0; j < n; j++) out[j] = ((start + j) * 31 + 7 + seed) % PATTERN
      yield out
    }
  })()
}

class Blocks {
  constructor () { this.map = new Map() }
  put (cid, bytes) { this.map.set(cid.toString(), bytes); return cid }
}

const hex = (b) => Buffer.from(b).toString('hex')

async function importFile (size, seed) {
  const store = new Blocks()
  let last
  for await (const entry of importer([{ content: content(size, seed) }], store, OPTIONS)) last = entry
  return { cid: last.cid.toString(), blocks: store.map.size, tsize: Number(last.size), root: store.map.get(last.cid.toString()) }
}

async function importTree (name, entries) {
  const store = new Blocks()
  const source = [{ path: name }, ...entries.map((e) => e.dir
    ? { path: `${name}/${e.path}` }
    : { path: `${name}/${e.path}`, content: content(e.size, e.seed) })]
  let root
  for await (const entry of importer(source, store, OPTIONS)) {
    if (entry.path === name) root = entry
  }
  return { cid: root.cid.toString(), blocks: store.map.size, tsize: Number(root.size), root: store.map.get(root.cid.toString()) }
}

const FILE_SIZES = [0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, LINKS * CHUNK, LINKS * CHUNK + 1]
const HEX_UP_TO = 1 << 20 // root blocks this small or smaller are recorded in full (every dag-pb root is)

const TREES = [
  { name: 'tree', entries: [
    { path: 'a.txt', size: 5, seed: 1 },
    { path: 'B.bin', size: CHUNK + 1, seed: 2 },
    { path: 'sub/c.txt', size: 100, seed: 3 },
    { path: 'sub/zero', size: 0, seed: 0 },
    { path: 'sub/deeper/d.bin', size: 2 * CHUNK, seed: 4 },
    { path: 'empty', dir: true },
    { path: 'caf\u00e9.txt', size: 7, seed: 5 },
    { path: 'cafe.txt', size: 7, seed: 6 }
  ] },
  { name: 'lonely', entries: [{ path: 'only', dir: true }] },
  { name: 'nothing', entries: [] }
]

const files = []
for (const size of FILE_SIZES) {
  const r = await importFile(size, 0)
  const v = { size, seed: 0, cid: r.cid, tsize: r.tsize, blocks: r.blocks }
  if (r.root.length <= HEX_UP_TO && (r.cid.startsWith('bafy') || size <= 5)) v.root_hex = hex(r.root)
  files.push(v)
}
const trees = []
for (const t of TREES) {
  const r = await importTree(t.name, t.entries)
  trees.push({ name: t.name, entries: t.entries, cid: r.cid, tsize: r.tsize, blocks: r.blocks, root_hex: hex(r.root) })
}

const out = {
  about: 'CIDs of `ipfs add --cid-version 1` (kubo) as the reference importer computes them; made by tools/unixfs_vectors/make_vectors.mjs',
  importer: 'ipfs-unixfs-importer',
  version: versionOf('ipfs-unixfs-importer'),
  dag_pb_version: versionOf('@ipld/dag-pb'),
  ipfs_unixfs_version: versionOf('ipfs-unixfs'),
  node_version: process.version,
  options: OPTION_TEXT,
  formula: 'byte i of a file with seed s is (i * 31 + 7 + s) % 251',
  files,
  trees
}
const path = process.argv[2] ?? 'unixfs.json'
writeFileSync(path, JSON.stringify(out, null, 1) + '\n')
console.log(`wrote ${path}: ${files.length} files, ${trees.length} trees`)
