/**
 * Builds the artifact nodes run: the CLI (and with it the agent and the coordinator) bundled
 * with every dependency into ES modules that need nothing but Node.js 24, packed as one npm
 * package, dist/bosun.tgz (`bin: bosun`), with its SHA-256 beside it in sha256sum's format.
 *
 *   npm run bundle                    (node build/bundle.ts [--outdir DIR])
 *
 *   dist/bosun/bosun.mjs, chunks/     the package's files; `node dist/bosun/bosun.mjs --help`
 *   dist/bosun/deploy/                the systemd units and user-data that install and run it
 *   dist/bosun/pino-pretty/bin.cjs    pino-pretty, to read the journal's JSON lines as text
 *   dist/bosun.tgz                    `npm pack` of dist/bosun: what a node fetches from S3
 *   dist/bosun.tgz.sha256             its SHA-256, checked before the node unpacks it
 *
 * Split into chunks rather than one file: each command's modules are still loaded when that
 * command runs (main.ts), so `bosun --help` parses commander and not the AWS SDK, and an agent
 * never reads the db tools it has no use for: one file took twice the time and 18 MB more for
 * `--version` (0.21 s and 70 MB against 0.10 s and 52 MB, warm compile cache). A node still
 * fetches and checks one object, the tarball.
 */
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { chmod, cp, mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "esbuild";
import { BOSUN_VERSION } from "@bosun/core/version";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Left out of the bundle: fauxqs (an emulator with its own server stack) serves only
 * `bosun dev`, which then says it needs the source checkout. emulator.ts imports it with
 * `import()` when it starts one, so the bundle loads without it.
 */
export const EXTERNAL: readonly string[] = ["fauxqs"];

export interface Artifact {
  /** The unpacked package: bosun.mjs, chunks/, package.json. */
  dir: string;
  entry: string;
  tarball: string;
  sha256: string;
  /** Bytes of JavaScript in the package, and of the tarball. */
  bytes: number;
  tarballBytes: number;
}

export async function bundle(outdir: string): Promise<Artifact> {
  const dir = join(outdir, "bosun");
  await rm(outdir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const result = await build({
    entryPoints: { bosun: join(root, "packages/cli/src/main.ts") },
    outdir: dir,
    outExtension: { ".js": ".mjs" },
    chunkNames: "chunks/[name]-[hash]",
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node24",
    minify: true,
    // Class names stay readable in logs (err.type) and stack traces.
    keepNames: true,
    legalComments: "none",
    external: [...EXTERNAL],
    logLevel: "warning",
    banner: {
      // CommonJS dependencies (pino, mysql2, the AWS SDK's helpers) call require() and read
      // __dirname; an ES module has neither, so each output file defines them.
      js: [
        'import { createRequire as __bosunRequire } from "node:module";',
        'import { fileURLToPath as __bosunPath } from "node:url";',
        "const require = __bosunRequire(import.meta.url);",
        "const __filename = __bosunPath(import.meta.url);",
        'const __dirname = __bosunPath(new URL(".", import.meta.url));',
      ].join("\n"),
    },
  });
  if (result.errors.length > 0) throw new Error(`esbuild failed: ${result.errors.map((e) => e.text).join("; ")}`);

  // esbuild keeps main.ts's `#!/usr/bin/env node`; `env -S` passes the flag bin/bosun passes,
  // small young-generation semi-spaces (children.ts NODE_FLAGS).
  const entry = join(dir, "bosun.mjs");
  const text = (await readFile(entry, "utf8")).replace(/^#![^\n]*\n/, "");
  await writeFile(entry, `#!/usr/bin/env -S node --max-semi-space-size=2\n${text}`);
  await chmod(entry, 0o755);
  // Bosun logs JSON lines straight to stdout (no pino transport, so nothing of pino's worker
  // threads to bundle); pino-pretty, its own small bundle, reads them as text on a node.
  await build({
    entryPoints: [join(root, "node_modules/pino-pretty/bin.js")],
    outfile: join(dir, "pino-pretty", "bin.cjs"),
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node24",
    minify: true,
    legalComments: "none",
    logLevel: "warning",
  });
  await cp(join(root, "node_modules/pino-pretty/help"), join(dir, "pino-pretty", "help"), { recursive: true });
  // A node installs the units from the release it runs, so units and code change together.
  for (const path of ["deploy/systemd", "deploy/user-data/bootstrap.sh", "deploy/README.md"]) {
    await cp(join(root, path), join(dir, path), { recursive: true });
  }
  await writeFile(
    join(dir, "package.json"),
    `${JSON.stringify(
      {
        name: "bosun",
        version: BOSUN_VERSION,
        description: "Keeps a fleet of EC2 web, database and load-balancer nodes in step over SNS, SQS and S3 (self-contained build).",
        type: "module",
        bin: { bosun: "bosun.mjs" },
        files: ["bosun.mjs", "chunks/", "deploy/", "pino-pretty/"],
        engines: { node: ">=24" },
      },
      null,
      2,
    )}\n`,
  );

  // npm pack gives every entry the same owner and time, so the same build gives the same bytes.
  const packed = execFileSync("npm", ["pack", "--json", "--pack-destination", outdir, dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const filename = (JSON.parse(packed) as { filename: string }[])[0]!.filename;
  const tarball = join(outdir, "bosun.tgz");
  await rename(join(outdir, filename), tarball);
  const tgz = await readFile(tarball);
  const sha256 = createHash("sha256").update(tgz).digest("hex");
  await writeFile(`${tarball}.sha256`, `${sha256}  bosun.tgz\n`);
  return { dir, entry, tarball, sha256, bytes: await sizeOf(dir), tarballBytes: tgz.length };
}

async function sizeOf(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && entry.name.endsWith(".mjs")) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { outdir: { type: "string", default: join(root, "dist") } } });
  const artifact = await bundle(resolve(values.outdir!));
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(2)} MB`;
  process.stdout.write(
    `${artifact.dir}: ${mb(artifact.bytes)} of JavaScript\n${artifact.tarball}: ${mb(artifact.tarballBytes)}, sha256 ${artifact.sha256} (in ${artifact.tarball}.sha256)\n`,
  );
}
