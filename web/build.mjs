// Builds the page (dist/) or, with --tests, the node unit tests (.test-build/) with esbuild.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";

const here = new URL(".", import.meta.url).pathname;

// --outdir DIR builds elsewhere (the bundle-size test); the default is dist/.
function outdir() {
  const at = process.argv.indexOf("--outdir");
  return at > 0 ? process.argv[at + 1].replace(/\/?$/, "/") : `${here}dist/`;
}

// Built beside the output, then each file renamed into it: a server reading dist/ meanwhile
// (mosaic web during a rebuild) sees the old file or the new one, never a missing or half one.
async function buildPage() {
  const out = outdir();
  const tmp = `${out.slice(0, -1)}.tmp-${process.pid}/`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await build({
    entryPoints: [`${here}src/main.ts`], bundle: true, minify: true, format: "esm",
    target: ["es2020"], outfile: `${tmp}app.js`, sourcemap: false, legalComments: "none",
    logLevel: "warning",
  });
  for (const name of readdirSync(`${here}static`)) {
    copyFileSync(`${here}static/${name}`, `${tmp}${name}`);
  }
  mkdirSync(out, { recursive: true });
  for (const name of readdirSync(tmp)) {
    renameSync(`${tmp}${name}`, `${out}${name}`);
  }
  rmSync(tmp, { recursive: true, force: true });
  const js = readFileSync(`${out}app.js`);
  console.log(`${out}app.js: ${js.length} bytes, ${gzipSync(js, { level: 9 }).length} gzipped`);
}

async function buildTests() {
  rmSync(`${here}.test-build`, { recursive: true, force: true });
  const tests = readdirSync(`${here}test`).filter((n) => n.endsWith(".test.ts"));
  await build({
    entryPoints: tests.map((n) => `${here}test/${n}`), bundle: true, format: "esm",
    platform: "node", target: ["node20"], outdir: `${here}.test-build`,
    outExtension: { ".js": ".mjs" }, logLevel: "warning",
  });
}

if (process.argv.includes("--tests")) {
  await buildTests();
} else {
  await buildPage();
}
