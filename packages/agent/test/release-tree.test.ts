import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { ReleaseRoot, PrepareError, lookUpUser } from "@bosun/agent";
import { appSchema } from "@bosun/core";
import { SiteRepo } from "../../../test/helpers/web.ts";

const log = pino({ level: "silent" });
const signal = new AbortController().signal;

/** Prepares `commit` and returns the refusal's code and message, or "ok". */
async function prepared(root: ReleaseRoot, repo: SiteRepo, commit: string): Promise<{ code: string; message: string }> {
  try {
    await root.prepare(repo.dir, commit, signal, log);
    return { code: "ok", message: "" };
  } catch (error) {
    if (error instanceof PrepareError) return { code: error.code, message: error.message };
    throw error;
  }
}

describe("a release never reaches outside itself", () => {
  let dir: string;
  let repo: SiteRepo;
  let root: ReleaseRoot;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "bosun-tree-"));
    repo = await SiteRepo.create(join(dir, "repo"));
    root = new ReleaseRoot({ logger: log }, { app: "demo", settings: appSchema.parse({ root: join(dir, "www", "demo"), repos: [repo.dir] }) });
    await repo.commit({ "index.html": "home\n" });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const refusals: [string, Record<string, { link: string } | string>, RegExp][] = [
    ["an absolute link", { "passwd.txt": { link: "/etc/passwd" } }, /symbolic link passwd\.txt -> \/etc\/passwd is absolute/],
    ["a link that climbs out", { "assets/key.txt": { link: "../../../../keys/oncall.key" } }, /assets\/key\.txt -> \.\.\/\.\.\/\.\.\/\.\.\/keys\/oncall\.key climbs out of the release/],
    // Lexically inside, but `sub/here` is the release itself, so two steps up from it is the deploy root.
    ["a link through a link", { "sub/here": { link: ".." }, "sneaky.txt": { link: "sub/here/../../mirror.git/config" } }, /sneaky\.txt -> sub\/here\/\.\.\/\.\.\/mirror\.git\/config resolves to .*mirror\.git\/config, outside the release/],
    ["a link to nothing", { "gone.txt": { link: "missing.txt" } }, /gone\.txt -> missing\.txt points at nothing in the release/],
  ];
  for (const [what, files, message] of refusals) {
    it(`refuses ${what}, naming the path, and leaves nothing behind`, async () => {
      const commit = await repo.commit(files);
      const result = await prepared(root, repo, commit);
      assert.equal(result.code, "UNSAFE_LINK");
      assert.match(result.message, message);
      assert.equal(await root.isPrepared(commit), false);
      assert.deepEqual((await readdir(root.releasesDir)).filter((n) => n.startsWith(".")), [], "no temporary tree left");
      await repo.commit(Object.fromEntries(Object.keys(files).map((k) => [k, null])));
    });
  }

  it("accepts links that stay inside the release", async () => {
    const commit = await repo.commit({ "docs/index.html": "docs\n", "latest.html": { link: "docs/index.html" }, "docs/up.html": { link: "../index.html" } });
    assert.deepEqual(await prepared(root, repo, commit), { code: "ok", message: "" });
    assert.equal(await readFile(join(root.releasesDir, commit, "latest.html"), "utf8"), "docs\n");
  });

  it("refuses a repository that brings .bosun-release, as a file or as a link, and never writes through it", async () => {
    const outside = join(dir, "outside.txt");
    await writeFile(outside, "untouched\n");
    for (const marker of [{ link: outside }, "0000000000000000000000000000000000000000\n"]) {
      const commit = await repo.commit({ ".bosun-release": marker });
      const result = await prepared(root, repo, commit);
      assert.equal(result.code, "RESERVED_PATH");
      assert.match(result.message, /the release holds \.bosun-release, which Bosun writes itself/);
      assert.equal(await readFile(outside, "utf8"), "untouched\n", "the file the link named was not written");
      assert.equal(await root.isPrepared(commit), false);
    }
    await repo.commit({ ".bosun-release": null });
  });
});

describe("size and space", () => {
  let dir: string;
  let repo: SiteRepo;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "bosun-size-"));
    repo = await SiteRepo.create(join(dir, "repo"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const rootWith = (name: string, limits: Record<string, number>) =>
    new ReleaseRoot({ logger: log }, { app: "demo", settings: appSchema.parse({ root: join(dir, name), repos: [repo.dir], limits }) });

  it("refuses a release larger than limits.releaseMB before writing it out", async () => {
    // Compressible: the fetch is small, the files are not.
    const commit = await repo.commit({ "big.txt": "bosun ".repeat(400_000) });
    const root = rootWith("release-limit", { releaseMB: 1, minFreeMB: 0 });
    const result = await prepared(root, repo, commit);
    assert.equal(result.code, "RELEASE_TOO_LARGE");
    assert.match(result.message, /holds 2\.3 MiB of files, more than the app's limit of 1\.0 MiB \(limits\.releaseMB\)/);
    assert.deepEqual((await readdir(root.releasesDir)).filter((n) => !n.startsWith("x")), []);
  });

  it("stops a fetch larger than limits.fetchMB and keeps none of it", async () => {
    const commit = await repo.commit({ "noise.bin": randomBytes(3 * 1048576) });
    const root = rootWith("fetch-limit", { fetchMB: 1, minFreeMB: 0 });
    const result = await prepared(root, repo, commit);
    assert.equal(result.code, "FETCH_TOO_LARGE");
    assert.match(result.message, /more than the app's limit of 1\.0 MiB \(limits\.fetchMB\)/);
    const packs = await readdir(join(root.root, "mirror.git", "objects", "pack"));
    const kept = await Promise.all(packs.map((p) => stat(join(root.root, "mirror.git", "objects", "pack", p)).then((s) => s.size)));
    assert.ok(kept.reduce((a, b) => a + b, 0) < 1048576, "the oversized pack was discarded");
  });

  it("checks free space before fetching, naming what it needs and what it found", async () => {
    const commit = await repo.commit({ "index.html": "small\n" });
    const root = rootWith("no-space", { minFreeMB: 1_000_000 });
    const result = await prepared(root, repo, commit);
    assert.equal(result.code, "NO_SPACE");
    assert.match(result.message, /MiB free on .*mirror\.git, less than the 1000000 MiB a fetch must leave \(limits\.minFreeMB\)/);
  });
});

describe("builds cannot touch what they do not own", () => {
  let dir: string;
  let repo: SiteRepo;
  let skip: string | undefined;
  before(async () => {
    if (process.getuid?.() !== 0) skip = "running builds as another user needs root (CI runs as root)";
    else if (!(await lookUpUser("bosun-build"))) skip = "no bosun-build user: create it with useradd --system bosun-build (.ci/run does)";
    dir = await mkdtemp(join(tmpdir(), "bosun-build-"));
    // Like /srv/www on a node: the deploy root is reachable by other users; the keys are not.
    await chmod(dir, 0o755);
    repo = await SiteRepo.create(join(dir, "repo"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("a build cannot read the node's keys nor write outside its tree, and cannot change its release afterwards", async (t) => {
    if (skip) return t.skip(skip);
    const keys = join(dir, "keys");
    const { mkdir } = await import("node:fs/promises");
    await mkdir(keys, { mode: 0o700 });
    await writeFile(join(keys, "fleet.key"), "PRIVATE KEY\n", { mode: 0o600 });
    const deployRoot = join(dir, "www", "demo");
    const script = [
      `cat ${join(keys, "fleet.key")} > stolen.txt 2>/dev/null && echo "read the key"`,
      `echo escaped > ${join(deployRoot, "escaped.txt")} 2>/dev/null && echo "wrote outside"`,
      `echo escaped > ../escaped.txt 2>/dev/null && echo "wrote beside"`,
      "echo built > built.txt",
      "exit 0",
    ].join("\n");
    const commit = await repo.commit({ "index.html": "home\n", "build.sh": `${script}\n` });
    const isolated = new ReleaseRoot({ logger: log }, { app: "demo", settings: appSchema.parse({ root: deployRoot, repos: [repo.dir], build: { command: ["sh", "build.sh"] } }) });
    assert.deepEqual(await prepared(isolated, repo, commit), { code: "ok", message: "" });
    const release = join(isolated.releasesDir, commit);
    assert.equal(await readFile(join(release, "built.txt"), "utf8"), "built\n");
    assert.equal(await readFile(join(release, "stolen.txt"), "utf8"), "", "the key was not readable");
    await assert.rejects(stat(join(deployRoot, "escaped.txt")), "nothing written into the deploy root");
    await assert.rejects(stat(join(isolated.releasesDir, "escaped.txt")), "nothing written beside the tree");
    // Handed back: the build user owns nothing of the release, and nobody but its owner may write it.
    for (const name of ["built.txt", "index.html", "."]) {
      const info = await lstat(join(release, name));
      assert.equal(info.uid, process.getuid!(), `${name} belongs to the agent again`);
      assert.equal(info.mode & 0o022, 0, `${name} is not writable by group or others`);
    }

    // The control: the same build as the agent's own user reads the key, so the test can fail.
    const exposed = new ReleaseRoot(
      { logger: log },
      { app: "demo", settings: appSchema.parse({ root: join(dir, "www", "exposed"), repos: [repo.dir], build: { command: ["sh", "build.sh"], user: false } }) },
    );
    assert.equal((await prepared(exposed, repo, commit)).code, "ok");
    assert.equal(await readFile(join(exposed.releasesDir, commit, "stolen.txt"), "utf8"), "PRIVATE KEY\n");
  });

  it("limits a build's processes and memory", async (t) => {
    if (skip) return t.skip(skip);
    const root = (name: string, build: Record<string, unknown>) =>
      new ReleaseRoot({ logger: log }, { app: "demo", settings: appSchema.parse({ root: join(dir, "www", name), repos: [repo.dir], build: { timeoutSeconds: 60, ...build } }) });
    const forks = await repo.commit({ "build.sh": "set -e\nfor i in $(seq 1 64); do sleep 30 & done\n" });
    const forked = await prepared(root("forks", { command: ["sh", "build.sh"], processes: 16 }), repo, forks);
    assert.equal(forked.code, "BUILD_FAILED", "the build could not start 64 processes");
    const hog = await repo.commit({ "build.sh": `awk 'BEGIN { s = "x"; while (1) s = s s }'\n` });
    const hogged = await prepared(root("hog", { command: ["sh", "build.sh"], memoryMB: 64 }), repo, hog);
    assert.equal(hogged.code, "BUILD_FAILED", "the build ran out of its memory and failed, rather than running on");
  });
});
