import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { appSchema, buildCgroupSchema, createLogger } from "@bosun/core";
import { runBuild } from "../src/roles/web/build.ts";
import { prepareBuildCgroup, type CgroupPaths } from "../src/roles/web/cgroup.ts";

const log = createLogger({ level: "silent", name: "test" });
const limits = buildCgroupSchema.parse(true) as Exclude<ReturnType<typeof buildCgroupSchema.parse>, false>;

/**
 * A cgroup v2 hierarchy as systemd leaves it for a unit with Delegate=yes, in plain files: the
 * kernel's own files behave alike for what the agent writes (one value per write).
 */
async function fakeHierarchy(dir: string, self = "0::/system.slice/bosun-agent.service\n"): Promise<CgroupPaths & { unit: string }> {
  const mount = join(dir, "cgroup");
  const unit = join(mount, "system.slice", "bosun-agent.service");
  await mkdir(unit, { recursive: true });
  await writeFile(join(unit, "cgroup.controllers"), "cpuset cpu io memory pids\n");
  await writeFile(join(unit, "cgroup.subtree_control"), "");
  await writeFile(join(unit, "cgroup.procs"), `${process.pid}\n`);
  await writeFile(join(dir, "self-cgroup"), self);
  return { mount, self: join(dir, "self-cgroup"), unit };
}

describe("the builds' cgroup", () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), "bosun-cgroup-"))));
  after(() => rm(dir, { recursive: true, force: true }));

  it("moves the agent to a leaf of its delegated cgroup, enables cpu, memory and pids for children, and limits `build`", async () => {
    const fake = await fakeHierarchy(join(dir, "a"));
    const build = await prepareBuildCgroup({ memoryPercent: 40, cpuPercent: 150, tasks: 300 }, fake);
    assert.equal(build, join(fake.unit, "build"));
    assert.equal(await readFile(join(fake.unit, "agent", "cgroup.procs"), "utf8"), String(process.pid));
    assert.equal(await readFile(join(fake.unit, "cgroup.subtree_control"), "utf8"), "+cpu +memory +pids");
    assert.equal(await readFile(join(build, "memory.max"), "utf8"), String(Math.floor(totalmem() * 0.4)));
    assert.equal(await readFile(join(build, "cpu.max"), "utf8"), "150000 100000");
    assert.equal(await readFile(join(build, "pids.max"), "utf8"), "300");
    // From the `agent` leaf (a second start of the role in the same process), the same cgroup.
    await writeFile(fake.self, "0::/system.slice/bosun-agent.service/agent\n");
    assert.equal(await prepareBuildCgroup(limits, fake), build);
  });

  it("is refused, naming why, outside cgroup v2 or where the unit's cgroup is not there to write", async () => {
    const v1 = await fakeHierarchy(join(dir, "v1"), "4:memory:/x\n0::/\n");
    await assert.rejects(prepareBuildCgroup(limits, v1), { code: "BUILD_CGROUP_UNAVAILABLE", message: /not in a cgroup v2 hierarchy/ });
    const elsewhere = await fakeHierarchy(join(dir, "elsewhere"), "0::/system.slice/other.service\n");
    await assert.rejects(prepareBuildCgroup(limits, elsewhere), { code: "BUILD_CGROUP_UNAVAILABLE", message: /not delegated.*Delegate=yes/ });
  });

  it("runs a build whose first step moves it into the cgroup, and runs none when the cgroup cannot be made", async () => {
    const fake = await fakeHierarchy(join(dir, "run"));
    const build = appSchema.parse({ root: dir, repos: ["x"], build: { command: ["sh", "-c", "echo built > built.txt"], user: false } }).build!;
    const tree = join(dir, "tree");
    await mkdir(tree);
    const ran = await runBuild(build, { cwd: tree, signal: new AbortController().signal, log, cgroup: { limits, paths: fake } });
    assert.deepEqual(ran.ok, true, JSON.stringify(ran));
    assert.equal(await readFile(join(tree, "built.txt"), "utf8"), "built\n");
    // The shell wrote 0 (itself) to the builds' cgroup before it became the build.
    assert.equal(await readFile(join(fake.unit, "build", "cgroup.procs"), "utf8"), "0\n");

    const none = join(dir, "none");
    await mkdir(none);
    const v1 = await fakeHierarchy(join(dir, "run-v1"), "1:cpu:/\n0::/\n");
    const refused = await runBuild(build, { cwd: none, signal: new AbortController().signal, log, cgroup: { limits, paths: v1 } });
    assert.equal(refused.ok, false);
    assert.equal(!refused.ok && refused.code, "BUILD_CGROUP");
    assert.equal(existsSync(join(none, "built.txt")), false, "no build ran without its limits");
  });

  it("is off unless asked for; `true` takes the defaults", () => {
    assert.equal(buildCgroupSchema.parse(false), false);
    assert.deepEqual(buildCgroupSchema.parse(true), { memoryPercent: 50, cpuPercent: 100, tasks: 1024 });
    assert.deepEqual(buildCgroupSchema.parse({ memoryPercent: 30 }), { memoryPercent: 30, cpuPercent: 100, tasks: 1024 });
  });
});
