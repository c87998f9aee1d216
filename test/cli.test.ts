import { describe, it } from "node:test";
import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { simpleGit } from "simple-git";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnBosun } from "../packages/cli/src/children.ts";
import { needs, onPath } from "./helpers/tools.ts";

/** Runs `bosun ARGS` in `cwd` with a bare environment: no AWS settings at all. */
async function bosun(args: string[], cwd: string, env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const proc = spawnBosun({
    name: "cli",
    args,
    cwd,
    env: { PATH: process.env["PATH"], HOME: process.env["HOME"], ...env },
    onLine: (line, stream) => (stream === "stdout" ? out : err).push(line),
  });
  const { code } = await proc.exited;
  return { code, stdout: out.join("\n"), stderr: err.join("\n") };
}

/** Processes whose working directory is `dir`: what `bosun dev` started there. */
async function processesIn(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cwd = await readlink(`/proc/${entry}/cwd`).catch(() => undefined);
    if (cwd === dir) pids.push(Number(entry));
  }
  return pids;
}

const tools = needs({ git: "git" });

describe("bosun dev", { skip: tools.skip }, () => {
  it("runs a local fleet that `bosun nodes` lists from the same directory, and Ctrl-C stops it all", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-dev-"));
    let dev: ReturnType<typeof spawnBosun> | undefined;
    try {
      const lines: string[] = [];
      let ready!: () => void;
      const running = new Promise<void>((r) => (ready = r));
      dev = spawnBosun({
        name: "dev",
        args: ["dev", "--port", "0", "--site-port", "0", "--no-db"],
        cwd: dir,
        env: { PATH: process.env["PATH"], HOME: process.env["HOME"] },
        onLine: (line) => {
          lines.push(line);
          if (line.startsWith("Local fleet running")) ready();
        },
      });
      await Promise.race([running, dev.exited.then(() => Promise.reject(new Error(`bosun dev exited early:\n${lines.join("\n")}`)))]);

      // Agents announce themselves as they come up; wait until all three are listed.
      let listed: { id: string; status: string; roles: string[] }[] = [];
      for (let i = 0; i < 100 && listed.length < 3; i++) {
        const result = await bosun(["nodes", "--json"], dir);
        assert.equal(result.code, 0, result.stderr);
        listed = JSON.parse(result.stdout) as typeof listed;
        if (listed.length < 3) await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual(listed.map((n) => `${n.id}:${n.roles.join(",")}:${n.status}`), ["lb-1:balancer:up", "web-1:web:up", "web-2:web:up"]);

      const sent = await bosun(["send", "probe", "--target", "all", "--wait", "--timeout", "30", "--json"], dir);
      assert.equal(sent.code, 0, sent.stderr);
      assert.deepEqual(
        (JSON.parse(sent.stdout) as { result: { nodes: { node: string; state: string }[] } }).result.nodes.map((n) => `${n.node}:${n.state}`),
        ["lb-1:done", "web-1:done", "web-2:done"],
      );

      // The demo app: release HEAD of the demo repository to both web nodes, change it, release again, roll back.
      const sites = [...(lines.find((l) => l.startsWith("Demo site:")) ?? "").matchAll(/(web-\d) (http:\/\/127\.0\.0\.1:\d+)/g)].map((m) => m[2]!);
      assert.equal(sites.length, 2);
      const first = await bosun(["release", "--app", "demo", "--ref", "HEAD", "--wait", "--json"], dir);
      assert.equal(first.code, 0, first.stdout + first.stderr);
      for (const site of sites) assert.match(await (await fetch(site)).text(), /Bosun demo site/);

      // lb-1's HAProxy (where haproxy is installed) puts both web nodes behind one address once their checks pass.
      const balancer = /Balancer: lb-1's HAProxy at (http:\/\/127\.0\.0\.1:\d+)/.exec(lines.join("\n"))?.[1];
      assert.equal(Boolean(balancer), onPath("haproxy"), "bosun dev says where lb-1's HAProxy listens exactly when haproxy is installed");
      if (balancer) {
        let healthy: string[] = [];
        for (let i = 0; i < 150 && healthy.length < 2; i++) {
          const status = await bosun(["lb", "status", "--json"], dir);
          assert.equal(status.code, 0, status.stderr);
          const lbs = (JSON.parse(status.stdout) as { balancers: { node: string; report?: { backends: { node: string; health: string; state: string }[] } }[] }).balancers;
          healthy = (lbs.find((b) => b.node === "lb-1")?.report?.backends ?? []).filter((b) => b.health === "up" && b.state === "ready").map((b) => b.node).sort();
          if (healthy.length < 2) await new Promise((r) => setTimeout(r, 200));
        }
        assert.deepEqual(healthy, ["web-1", "web-2"]);
        assert.match(await (await fetch(balancer)).text(), /Bosun demo site/);
      }
      const repo = join(dir, ".bosun", "dev", "demo-site");
      await writeFile(join(repo, "index.html"), "<h1>Second release</h1>\n");
      await simpleGit(repo).add(["index.html"]).then(() => simpleGit(repo).commit("Second"));
      const second = await bosun(["release", "--app", "demo", "--ref", "HEAD", "--wait"], dir);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      assert.match(second.stdout, /Active on 2 node\(s\): web-1, web-2/);
      for (const site of sites) assert.match(await (await fetch(site)).text(), /Second release/);
      const back = await bosun(["rollback", "--app", "demo", "--wait"], dir);
      assert.equal(back.code, 0, back.stdout + back.stderr);
      for (const site of sites) assert.match(await (await fetch(site)).text(), /Bosun demo site/);

      assert.ok((await processesIn(dir)).length >= 5, "dev, a coordinator and three agents run in the directory");
      dev.child.kill("SIGINT");
      const exit = await dev.exited;
      assert.equal(exit.code, 0);
      assert.ok(lines.includes("Fleet stopped."));
      assert.deepEqual(await processesIn(dir), [], "no process of the fleet is left");
      assert.ok(lines.filter((l) => l.includes("agent stopped")).length === 3, "each agent stopped cleanly");
    } finally {
      await dev?.stop(30_000);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("bosun dev dies whole", { skip: tools.skip }, () => {
  it("a killed dev fleet takes its children with it; a restart stops survivors, and only web nodes deploy apps", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-dev-"));
    const env = { PATH: process.env["PATH"], HOME: process.env["HOME"] };
    const started: ReturnType<typeof spawnBosun>[] = [];
    const startDev = async () => {
      const lines: string[] = [];
      let ready!: () => void;
      const running = new Promise<void>((r) => (ready = r));
      const dev = spawnBosun({
        name: "dev",
        args: ["dev", "--port", "0", "--site-port", "0", "--no-db"],
        cwd: dir,
        env,
        onLine: (line) => {
          lines.push(line);
          if (line.startsWith("Local fleet running")) ready();
        },
      });
      started.push(dev);
      await Promise.race([running, dev.exited.then(() => Promise.reject(new Error(`bosun dev exited early:\n${lines.join("\n")}`)))]);
      return { dev, lines };
    };
    const waitFor = async (what: string, check: () => Promise<boolean> | boolean) => {
      for (let i = 0; i < 300 && !(await check()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(await check(), what);
    };
    try {
      const first = await startDev();
      await waitFor("the agents run", () => first.lines.filter((l) => l.includes("agent running")).length === 3);
      await waitFor("the coordinator lists the web nodes", async () => {
        const listed = await bosun(["nodes", "--role", "web", "--json"], dir);
        return listed.code === 0 && (JSON.parse(listed.stdout) as unknown[]).length === 2;
      });
      const release = await bosun(["release", "--app", "demo", "--ref", "HEAD", "--wait", "--json"], dir);
      assert.equal(release.code, 0, release.stdout + release.stderr);
      const children = (JSON.parse(await readFile(join(dir, ".bosun", "dev", "children.json"), "utf8")) as { pid: number }[]).map((c) => c.pid);
      assert.equal(children.length, 4, "a coordinator and three agents");

      first.dev.child.kill("SIGKILL");
      await first.dev.exited;
      const alive = (pid: number) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      await waitFor("every child exits when its parent is killed", () => children.every((pid) => !alive(pid)));

      // A survivor from some earlier fleet (a child that lost its lifeline) is stopped by the next start.
      const survivor = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", "bosun-survivor"], { stdio: "ignore", detached: true });
      await writeFile(join(dir, ".bosun", "dev", "children.json"), JSON.stringify([{ name: "web-1", pid: survivor.pid }]));
      const second = await startDev();
      assert.ok(second.lines.some((l) => l.includes(`stopping web-1 (pid ${survivor.pid}), left running by an earlier fleet`)));
      assert.equal(alive(survivor.pid!), false);

      // Restarted with a release desired: web nodes come back to it, the balancer deploys nothing.
      // The balancer runs without the web role: it takes no web commands and deploys no apps.
      await waitFor("lb-1 runs", () => second.lines.some((l) => l.includes("lb-1") && l.includes("agent running")));
      assert.ok(second.lines.some((l) => l.includes("lb-1") && l.includes("agent running") && l.includes('plugins=["balancer"]')), "lb-1 has the balancer plug-in only");
      await waitFor("web-1 checks its app", () => second.lines.some((l) => l.includes("web-1") && l.includes("after subscribing")));
      await assert.rejects(stat(join(dir, ".bosun", "dev", "nodes", "publisher")), "no app was deployed from the publisher's settings");
      second.dev.child.kill("SIGINT");
      assert.equal((await second.dev.exited).code, 0);
      assert.deepEqual(await processesIn(dir), [], "no process of the fleet is left");
    } finally {
      // A failed assertion must not leave a fleet running (it would hold this test file open).
      await Promise.all(started.map((p) => p.stop(30_000)));
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the CLI's own errors and help", () => {
  it("a bad setting stops with exit 2 and names the setting and the value", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-cli-"));
    const result = await bosun(["nodes"], dir, { BOSUN_CONCURRENCY: "lots" });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /bosun: Invalid BOSUN_CONCURRENCY: .*received "lots"/);
    await rm(dir, { recursive: true, force: true });
  });

  it("a bad --target and an unknown command type are usage errors", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-cli-"));
    const badTarget = await bosun(["send", "probe", "--target", "role:no spaces"], dir);
    assert.equal(badTarget.code, 2);
    assert.match(badTarget.stderr, /Invalid --target "role:no spaces"/);
    const unknown = await bosun(["send", "reboot-everything", "--target", "all"], dir);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /Unknown command type "reboot-everything"; known types: probe, decommission/);
    await rm(dir, { recursive: true, force: true });
  });

  it("every command has --help", async () => {
    const dir = tmpdir();
    for (const command of [[], ["init"], ["dev"], ["agent"], ["coordinator"], ["nodes"], ["keys", "generate"], ["send"], ["events"], ["release"], ["rollback"], ["releases"], ["lb"], ["lb", "status"], ["lb", "drain"]]) {
      const result = await bosun([...command, "--help"], dir);
      assert.equal(result.code, 0, `bosun ${command.join(" ")} --help`);
      assert.match(result.stdout, /Usage: bosun/);
    }
  });

  it("keys generate writes a private key only its owner can read and adds the public key to the trust file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-keys-"));
    const result = await bosun(["keys", "generate", "--id", "ci", "--allow", "release", "--dir", "k", "--trust", "k/trust.json", "--json"], dir);
    assert.equal(result.code, 0, result.stderr);
    const data = JSON.parse(result.stdout) as { privateKeyFile: string; publicKey: string };
    assert.equal((await stat(data.privateKeyFile)).mode & 0o777, 0o600);
    const trust = JSON.parse(await readFile(join(dir, "k", "trust.json"), "utf8")) as { keys: Record<string, { publicKey: string; allow: string[] }> };
    assert.deepEqual(trust.keys["ci"], { publicKey: data.publicKey, allow: ["release"] });
    assert.ok(!result.stdout.includes("PRIVATE KEY"), "the private key is never printed");
    const again = await bosun(["keys", "generate", "--id", "ci", "--allow", "release", "--dir", "k", "--trust", "k/trust.json"], dir);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /exists .* pass --force/);
    await rm(dir, { recursive: true, force: true });
  });
});
