import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { ReleaseRoot, lookUpUser, type PrepareResult } from "@bosun/agent";
import { appSchema } from "@bosun/core";
import { SiteRepo } from "../../../test/helpers/web.ts";

const log = pino({ level: "silent" });
const signal = new AbortController().signal;
const sha = (text: string) => createHash("sha256").update(text).digest("hex");

describe("a release reuses the files the current one holds unchanged", () => {
  let dir: string;
  let skipBuilds: string | undefined;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "bosun-reuse-"));
    await chmod(dir, 0o755);
    if (process.getuid?.() !== 0) skipBuilds = "running builds as another user needs root (CI runs as root)";
    else if (!(await lookUpUser("bosun-build"))) skipBuilds = "no bosun-build user: create it with useradd --system bosun-build (.ci/run does)";
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** A fresh repository and deploy root, serving a first release of `files`. */
  async function serving(files: Record<string, string>, build?: Record<string, unknown>): Promise<{ root: ReleaseRoot; first: string; repo: SiteRepo }> {
    n += 1;
    const repo = await SiteRepo.create(join(dir, `repo-${n}`));
    const root = new ReleaseRoot({ logger: log }, { app: "demo", settings: appSchema.parse({ root: join(dir, `www-${n}`), repos: [repo.dir], graceSeconds: 0, ...(build ? { build } : {}) }) });
    const first = await repo.commit(files);
    await root.prepare(repo.dir, first, signal, log);
    assert.equal((await root.activate(first, 1, { signal, log })).status, "active");
    return { root, first, repo };
  }
  const file = (root: ReleaseRoot, commit: string, path: string) => join(root.releasesDir, commit, path);

  it("hard-links unchanged files, writes and hashes only the changed ones, and the result is the commit's tree", async () => {
    const pages = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`pages/p${i}.html`, `page ${i}\n`]));
    const { root, first, repo } = await serving({ "index.html": "one\n", ...pages });
    const second = await repo.commit({ "index.html": "two\n", "pages/p3.html": null, "new.html": "new\n" });
    const result: PrepareResult = await root.prepare(repo.dir, second, signal, log);
    assert.equal(result.filesReused, 19, "19 pages unchanged");
    assert.equal(result.filesWritten, 2, "index.html changed, new.html added");
    assert.equal((await stat(file(root, second, "pages/p0.html"))).ino, (await stat(file(root, first, "pages/p0.html"))).ino, "the same file, linked");
    assert.equal(await readFile(file(root, second, "index.html"), "utf8"), "two\n");
    await assert.rejects(stat(file(root, second, "pages/p3.html")), "a file the commit removed is not there");
  });

  it("does not reuse a file changed in place since it was verified, and still writes the commit's content", async () => {
    const { root, first, repo } = await serving({ "index.html": "one\n", "keep.html": "kept\n" });
    // Something wrote into the served release behind Bosun's back: size and mtime no longer match.
    await writeFile(file(root, first, "keep.html"), "tampered\n");
    const second = await repo.commit({ "index.html": "two\n" });
    const result = await root.prepare(repo.dir, second, signal, log);
    assert.equal(result.filesReused, 0);
    assert.equal(await readFile(file(root, second, "keep.html"), "utf8"), "kept\n");
    // Even with the mtime put back, the size gives it away here; the content is what the commit holds.
    await utimes(file(root, first, "keep.html"), new Date(), new Date(0));
  });

  it("a build cannot change a reused file in place: the served release stays byte for byte what it was", async (t) => {
    if (skipBuilds) return t.skip(skipBuilds);
    const build = { command: ["sh", "build.sh"] };
    const { root, first, repo } = await serving({ "index.html": "served\n", "build.sh": "exit 0\n" }, build);
    const before = sha(await readFile(file(root, first, "index.html"), "utf8"));
    // The next release's build tries to rewrite, append to and chmod the file it shares with the served one.
    const hostile = await repo.commit({
      "build.sh": "printf hacked > index.html; printf more >> index.html; chmod 666 index.html; truncate -s 0 index.html; echo built > built.txt; exit 0\n",
    });
    const result = await root.prepare(repo.dir, hostile, signal, log);
    assert.equal(result.filesReused, 1, "index.html was linked from the served release");
    assert.equal(sha(await readFile(file(root, first, "index.html"), "utf8")), before, "the served release is unchanged");
    assert.equal(await readFile(file(root, hostile, "index.html"), "utf8"), "served\n", "and so is the new release's copy");
    assert.equal(await readFile(file(root, hostile, "built.txt"), "utf8"), "built\n", "the build ran");
  });

  it("a build may replace a reused file; the replacement is never reused as the commit's file", async (t) => {
    if (skipBuilds) return t.skip(skipBuilds);
    const build = { command: ["sh", "build.sh"] };
    const { root, first, repo } = await serving({ "index.html": "served\n", "about.html": "about\n", "build.sh": "exit 0\n" }, build);
    // sed -i writes a new file and renames it over the old one: the served release keeps its own.
    const rewriting = await repo.commit({ "build.sh": "sed -i s/served/rewritten/ index.html\n" });
    await root.prepare(repo.dir, rewriting, signal, log);
    assert.equal(await readFile(file(root, first, "index.html"), "utf8"), "served\n");
    assert.equal(await readFile(file(root, rewriting, "index.html"), "utf8"), "rewritten\n");
    assert.equal((await root.activate(rewriting, 10_000, { signal, log })).status, "active");
    // The next release has the same index.html blob, but the current one's file is the build's: it is written anew.
    const next = await repo.commit({ "build.sh": "exit 0\n" });
    const result = await root.prepare(repo.dir, next, signal, log);
    assert.equal(await readFile(file(root, next, "index.html"), "utf8"), "served\n");
    assert.equal(result.filesReused, 1, "only about.html, untouched by the build, is linked");
  });

  it("reuses nothing when builds run as the agent's own user, which could change any file", async () => {
    const build = { command: ["sh", "build.sh"], user: false };
    const { root, repo } = await serving({ "index.html": "one\n", "build.sh": "exit 0\n" }, build);
    const second = await repo.commit({ "other.html": "x\n" });
    assert.equal((await root.prepare(repo.dir, second, signal, log)).filesReused, 0);
  });
});
