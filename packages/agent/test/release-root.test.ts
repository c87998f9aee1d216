import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { ReleaseRoot } from "@bosun/agent";
import { appSchema } from "@bosun/core";
import { SiteRepo } from "../../../test/helpers/web.ts";

const log = pino({ level: "silent" });
const signal = new AbortController().signal;

describe("release housekeeping", () => {
  it("keeps `keep` releases besides current and previous, each only after its grace period", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-root-"));
    try {
      const repo = await SiteRepo.create(join(dir, "repo"));
      const settings = (graceSeconds: number) => appSchema.parse({ root: join(dir, "root"), repos: [repo.dir], keep: 1, graceSeconds });
      const patient = new ReleaseRoot({ logger: log }, { app: "demo", settings: settings(3600) });
      const commits: string[] = [];
      for (const n of [1, 2, 3, 4]) {
        const commit = await repo.commit({ "index.html": `release ${n}\n` });
        commits.push(commit);
        await patient.prepare(repo.dir, commit, signal, log);
        assert.equal((await patient.activate(commit, n, { signal, log })).status, "active");
      }
      const listed = async () => (await readdir(join(dir, "root", "releases"))).filter((e) => !e.startsWith(".")).sort();
      // Every retired release is still within its hour of grace.
      assert.deepEqual(await listed(), [...commits].sort());

      const prompt = new ReleaseRoot({ logger: log }, { app: "demo", settings: settings(0) });
      const removed = await prompt.prune(log);
      // Current (4) and previous (3) stay, plus the newest other one (2); the oldest (1) goes.
      assert.deepEqual(removed, [commits[0]]);
      assert.deepEqual(await listed(), [commits[1], commits[2], commits[3]].sort());
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("does not count a release that failed its health check as kept, and removes it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-root-"));
    try {
      const repo = await SiteRepo.create(join(dir, "repo"));
      const root = new ReleaseRoot(
        { logger: log },
        { app: "demo", settings: appSchema.parse({ root: join(dir, "root"), repos: [repo.dir], keep: 1, graceSeconds: 0, health: { url: "http://127.0.0.1:9/", attempts: 1 } }) },
      );
      const healthy = new ReleaseRoot({ logger: log }, { app: "demo", settings: appSchema.parse({ root: join(dir, "root"), repos: [repo.dir], keep: 1, graceSeconds: 0 }) });
      const good = await repo.commit({ "index.html": "good\n" });
      await healthy.prepare(repo.dir, good, signal, log);
      await healthy.activate(good, 1, { signal, log });
      const bad = await repo.commit({ "index.html": "bad\n" });
      await root.prepare(repo.dir, bad, signal, log);
      assert.equal((await root.activate(bad, 2, { signal, log })).status, "failed");
      assert.deepEqual((await root.readState()).failed, [bad]);
      assert.deepEqual(await healthy.prune(log), [bad]);
      assert.deepEqual((await root.readState()).failed, []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("one step at a time on a deploy root, across processes", () => {
  it("a prepare waits while another process (say `bosun agent --sync-once`) holds the deploy root", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-root-lock-"));
    try {
      const repo = await SiteRepo.create(join(dir, "repo"));
      const commit = await repo.commit({ "index.html": "one\n" });
      const rootDir = join(dir, "root");
      await mkdir(rootDir, { recursive: true });
      // Another Bosun process takes the root's lock and holds it until told to let go.
      const script = `import { acquirePidLock } from "@bosun/core";
const lock = await acquirePidLock(${JSON.stringify(join(rootDir, ".lock"))}, "test");
process.stdout.write("held\\n");
process.stdin.once("data", async () => { await lock.release(); process.stdout.write("released\\n"); process.exit(0); });`;
      const holder = spawn(process.execPath, ["--input-type=module", "-e", script, "bosun-lock-holder"], { stdio: ["pipe", "pipe", "inherit"] });
      const lines = createInterface({ input: holder.stdout! });
      const said = (line: string) => new Promise<void>((resolve) => lines.on("line", (l) => l === line && resolve()));
      await said("held");
      const waited: string[] = [];
      const logger = pino({ level: "info" }, { write: (line: string) => void waited.push(JSON.parse(line).msg) });
      const root = new ReleaseRoot({ logger }, { app: "demo", settings: appSchema.parse({ root: rootDir, repos: [repo.dir] }) });
      let preparedAt = 0;
      const preparing = root.prepare(repo.dir, commit, signal, logger).then(() => (preparedAt = Date.now()));
      for (let i = 0; i < 100 && !waited.includes("waiting for the deploy root"); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(waited.includes("waiting for the deploy root"), "the prepare says it waits");
      assert.equal(preparedAt, 0, "and does not go ahead while the other process holds the root");
      const released = said("released").then(() => Date.now());
      holder.stdin!.write("go\n");
      const releasedAt = await released;
      await preparing;
      assert.ok(preparedAt >= releasedAt, "the prepare ran once the root was free");
      assert.equal(await root.isPrepared(commit), true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
