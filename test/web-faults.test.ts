import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readdir, readFile, readlink } from "node:fs/promises";
import { createServer, type ServerResponse } from "node:http";
import { once } from "node:events";
import { join } from "node:path";
import { promisify } from "node:util";
import { TestFleet } from "./helpers/fleet.ts";
import { SiteRepo } from "./helpers/web.ts";
import { needs } from "./helpers/tools.ts";

const run = promisify(execFile);

/** A web node's app settings, with the deploy root and health URL given. */
const appsEnv = (root: string, repo: string, health?: string) => ({
  // No free-space floor: the full-disk test fills a 2 MiB filesystem on purpose, to see checkout fail.
  BOSUN_APPS: JSON.stringify({ demo: { root, repos: [repo], limits: { minFreeMB: 0 }, ...(health ? { health: { url: health, attempts: 1, timeoutSeconds: 60 } } : {}) } }),
});

const tools = needs({ git: "git" });

describe("web faults", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let repo: SiteRepo;
  before(async () => {
    fleet = await TestFleet.start({ visibilityTimeoutSeconds: 3 });
    repo = await SiteRepo.create(join(fleet.dir, "site"));
  });
  after(() => fleet.close());

  const release = (node: string, commit: string) =>
    fleet.command("release", { app: "demo", repo: repo.dir, commit, sequence: Date.now(), activate: true }, { nodes: [node] });

  it("a full disk during checkout leaves the site on its release and nothing half-written; the next release works", async (t) => {
    const root = join(fleet.dir, "small-disk");
    await mkdir(root, { recursive: true });
    // A 2 MiB filesystem of its own: fetching a compressible 8 MiB file fits, checking it out would not.
    try {
      await run("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", root]);
    } catch (error) {
      t.skip(`cannot mount a small tmpfs here (needs root): ${(error as Error).message}`);
      return;
    }
    try {
      const node = "full-1";
      await fleet.startAgent(node, ["web"], appsEnv(join(root, "demo"), repo.dir));
      const first = await repo.commit({ "index.html": "first\n" });
      const ok = release(node, first);
      await fleet.publish(ok);
      assert.equal(((await fleet.waitForNodeEvent(ok.id, node, "done")).payload as { result: { status: string } }).result.status, "active");

      // Compressible (small in the mirror) and not zeros (git writes runs of zeros as holes):
      // sized from the mirror before checkout, it is refused with the space it needs.
      const big = await repo.commit({ "big.bin": "bosun ".repeat(1_400_000) });
      const tooBig = release(node, big);
      await fleet.publish(tooBig);
      const refused = (await fleet.waitForNodeEvent(tooBig.id, node, "failed", 30_000)).payload as { code: string; error: string };
      assert.equal(refused.code, "NO_SPACE");
      assert.match(refused.error, /needs 8\.0 MiB; \d+\.\d MiB is free on .*small-disk\/demo, and 0\.0 MiB must stay free \(limits\.minFreeMB\)/);

      // Many one-byte files are small by their size and large on disk (a page each): the
      // check passes and the disk fills during checkout.
      const files = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`many/f${i}.txt`, `${i % 10}`]));
      const many = await repo.commit({ "big.bin": null, ...files });
      const full = release(node, many);
      await fleet.publish(full);
      const failed = (await fleet.waitForNodeEvent(full.id, node, "failed", 30_000)).payload as { code: string; error: string };
      assert.equal(failed.code, "CHECKOUT_FAILED");
      assert.match(failed.error, /unable to (write|create) file many\/f\d+\.txt.* \(\d+ KiB free on /);
      assert.equal((await readlink(join(root, "demo", "current"))).split("/").pop(), first);
      assert.deepEqual((await readdir(join(root, "demo", "releases"))).filter((e) => e.startsWith(".")), [], "no temporary tree or index left");

      const next = await repo.commit({ ...Object.fromEntries(Object.keys(files).map((f) => [f, null])), "index.html": "next\n" });
      const after = release(node, next);
      await fleet.publish(after);
      assert.equal(((await fleet.waitForNodeEvent(after.id, node, "done", 30_000)).payload as { result: { status: string } }).result.status, "active");
      assert.equal(await readFile(join(root, "demo", "current", "index.html"), "utf8"), "next\n");
    } finally {
      await fleet.processes.find((p) => p.name === "full-1")?.stop();
      await run("umount", ["-l", root]).catch(() => undefined);
    }
  });

  it("a node's first release that fails its health check leaves no `current`, as before", async () => {
    const node = "first-1";
    const root = join(fleet.dir, "first", "demo");
    // Nothing listens on port 9 here: the probe fails at once.
    await fleet.startAgent(node, ["web"], appsEnv(root, repo.dir, "http://127.0.0.1:9/health"));
    const commit = await repo.commit({ "index.html": "never served\n" });
    const command = release(node, commit);
    await fleet.publish(command);
    const failed = await fleet.waitForNodeEvent(command.id, node, "failed", 30_000);
    assert.equal((failed.payload as { code: string }).code, "HEALTH_CHECK_FAILED");
    await assert.rejects(readlink(join(root, "current")), { code: "ENOENT" });
  });

  it("an agent killed between the swap and the health verdict resumes and swaps back when the site is unhealthy", async () => {
    // The node's health endpoint: held open (the agent waits on it) until told how to answer.
    const held: ServerResponse[] = [];
    let mode: "hold" | "fail" = "hold";
    const health = createServer((_req, res) => {
      if (mode === "hold") held.push(res);
      else res.writeHead(500).end("broken");
    });
    health.listen(0, "127.0.0.1");
    await once(health, "listening");
    const url = `http://127.0.0.1:${(health.address() as { port: number }).port}/health`;
    const root = join(fleet.dir, "swap", "demo");
    const node = "swap-1";
    try {
      const env = appsEnv(root, repo.dir, url);
      const first = await repo.commit({ "index.html": "stable\n" });
      const agent = await fleet.startAgent(node, ["web"], appsEnv(root, repo.dir));
      const initial = release(node, first);
      await fleet.publish(initial);
      await fleet.waitForNodeEvent(initial.id, node, "done");
      await agent.stop();

      const killed = await fleet.startAgent(node, ["web"], env);
      const risky = await repo.commit({ "index.html": "risky\n" });
      const command = release(node, risky);
      await fleet.publish(command);
      // The swap has happened when the agent starts probing its site.
      while (held.length === 0) await once(health, "request");
      assert.equal((await readlink(join(root, "current"))).split("/").pop(), risky);
      killed.child.kill("SIGKILL");
      await killed.exited;
      for (const res of held) res.destroy();

      mode = "fail";
      await fleet.startAgent(node, ["web"], env);
      const failed = await fleet.waitForNodeEvent(command.id, node, "failed", 30_000);
      assert.equal((failed.payload as { code: string }).code, "HEALTH_CHECK_FAILED");
      assert.deepEqual(fleet.eventsFor(command.id, "ack").map((e) => (e.payload as { resumed: boolean }).resumed), [false, true]);
      assert.equal((await readlink(join(root, "current"))).split("/").pop(), first, "back on the release from before the interrupted swap");
      assert.equal(fleet.eventsFor(command.id, "done").length, 0);
    } finally {
      health.closeAllConnections();
      health.close();
    }
  });
});
