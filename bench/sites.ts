import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { SiteRepo } from "../test/helpers/web.ts";

const run = promisify(execFile);

/** A repository releases come from, and what one checkout of it weighs. */
export interface Site {
  repo: SiteRepo;
  label: string;
  files: number;
  bytes: number;
}

/** A small site: one ~64 KB page that names its release, and a few small assets. */
export async function createSmallSite(dir: string): Promise<Site> {
  const repo = await SiteRepo.create(dir);
  const assets = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`assets/style-${i}.css`, `.c${i} { color: #${String(i).repeat(6)}; }\n`.repeat(30)]));
  const page = SiteRepo.page("small site, first release");
  await repo.commit({ "index.html": page, ...assets }, "small site");
  const bytes = Buffer.byteLength(page) + Object.values(assets).reduce((sum, text) => sum + Buffer.byteLength(text), 0);
  return { repo, label: "small", files: 1 + Object.keys(assets).length, bytes };
}

/**
 * A large site: the page plus `megabytes` files of 1 MiB of random bytes, which no compression
 * shrinks. Packed once with `git repack -a -d`, as a git server keeps its repositories: served
 * from loose objects, every clone would first spend seconds compressing them.
 */
export async function createLargeSite(dir: string, megabytes: number): Promise<Site> {
  const repo = await SiteRepo.create(dir);
  await mkdir(join(dir, "media"), { recursive: true });
  for (let i = 0; i < megabytes; i++) await writeFile(join(dir, "media", `blob-${String(i).padStart(4, "0")}.bin`), randomBytes(2 ** 20));
  const page = SiteRepo.page("large site, first release");
  // commit() adds everything in the work tree, the random files written above included.
  await repo.commit({ "index.html": page }, "large site");
  await run("git", ["-C", dir, "repack", "-a", "-d", "--quiet"], { maxBuffer: 2 ** 20 });
  return { repo, label: `${megabytes} MB`, files: megabytes + 1, bytes: megabytes * 2 ** 20 + Buffer.byteLength(page) };
}

/** A small change: one file, the page, rewritten. Returns the new commit. */
export function commitChange(site: Site, label: string): Promise<string> {
  return site.repo.commit({ "index.html": SiteRepo.page(label) }, label);
}
