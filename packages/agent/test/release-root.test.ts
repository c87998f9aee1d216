import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
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
