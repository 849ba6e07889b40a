// Builds the dashboard bundle into dist/ (or into the directory given as the first argument):
// src/main.js -> app.js (one minified classic script), src/style.css -> app.css, favicon.svg,
// and index.html from src/index.html with every asset referenced as `name?v=<hash>`, where
// <hash> is the first 16 hex digits of the file's SHA-256 — the same value the router sends as
// the ETag (src/router/ui.rs), so a changed asset is never read from a stale cache.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile, copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'dist');
await mkdir(out, { recursive: true });

const common = { bundle: true, minify: true, legalComments: 'none', logLevel: 'warning' };
await esbuild.build({
  ...common,
  entryPoints: [join(here, 'src/main.js')],
  outfile: join(out, 'app.js'),
  format: 'iife',
  target: ['es2022'],
  charset: 'utf8',
});
await esbuild.build({
  ...common,
  entryPoints: [join(here, 'src/style.css')],
  outfile: join(out, 'app.css'),
});
await copyFile(join(here, 'src/favicon.svg'), join(out, 'favicon.svg'));

const version = async (name) =>
  createHash('sha256').update(await readFile(join(out, name))).digest('hex').slice(0, 16);
let index = await readFile(join(here, 'src/index.html'), 'utf8');
for (const name of ['app.js', 'app.css', 'favicon.svg']) {
  index = index.replaceAll(`{{${name}}}`, `${name}?v=${await version(name)}`);
}
await writeFile(join(out, 'index.html'), index);
