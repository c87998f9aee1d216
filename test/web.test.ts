import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile, readlink, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";
import { Nginx, SiteRepo, loadGenerator } from "./helpers/web.ts";
import { needs } from "./helpers/tools.ts";

interface WebNode {
  id: string;
  root: string;
  nginx: Nginx;
  agent: TestProcess;
  env: Record<string, string>;
}

type ReleaseJson = { commit: string; active: string[]; failed: { node: string; phase: string; detail: string }[]; rolledBack: string[]; stopped?: string; ok: boolean };

const tools = needs({ nginx: "nginx", git: "git" });

describe("web releases", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let repo: SiteRepo;
  const nodes: WebNode[] = [];
  const pages = new Map<string, string>();
  const base = { "build.sh": "exit 0\n", "must-exist.txt": "ok\n" };

  /** Commits a release whose page names it; returns the commit id. */
  async function commitRelease(label: string, extra: Record<string, string | null> = {}): Promise<string> {
    const page = SiteRepo.page(label);
    const commit = await repo.commit({ ...base, "index.html": page, ...extra }, label);
    pages.set(commit, page);
    return commit;
  }

  async function startWebNode(id: string, health: { path: string; marker: boolean }): Promise<WebNode> {
    const root = join(fleet.dir, "www", id, "demo");
    const nginx = await Nginx.start(join(fleet.dir, "nginx", id), join(root, "current"));
    const apps = {
      demo: {
        root,
        repos: [repo.dir],
        build: { command: ["sh", "build.sh"], timeoutSeconds: 2 },
        health: { url: `${nginx.url}${health.path}`, marker: health.marker, attempts: 2, timeoutSeconds: 2 },
        keep: 2,
        graceSeconds: 0,
      },
    };
    const env = { BOSUN_APPS: JSON.stringify(apps) };
    const agent = await fleet.startAgent(id, ["web"], env);
    await fleet.waitForNodes([id]);
    return { id, root, nginx, agent, env };
  }

  const serving = async (node: WebNode) => (await fetch(`${node.nginx.url}/`)).text();
  const currentOf = async (node: WebNode) => (await readlink(join(node.root, "current"))).split("/").pop();
  /** CI's key: it may release, activate and roll back, nothing else. */
  const ci = () => ({ BOSUN_KEY_ID: "ci", BOSUN_SIGNING_KEY: join(fleet.dir, "keys", "ci.key") });
  const release = async (ref: string, ...flags: string[]) => {
    const out = await fleet.bosun(["release", "--app", "demo", "--ref", ref, "--repo", repo.dir, "--wait", "--timeout", "30", "--json", ...flags], ci());
    return { ...out, result: out.code !== null && out.stdout.startsWith("{") ? (JSON.parse(out.stdout) as ReleaseJson) : undefined };
  };

  /** Every node serves a release of this repository: each test that needs one makes sure of it, so tests run alone. */
  async function ensureServing(): Promise<void> {
    const currents = await Promise.all(nodes.map((n) => currentOf(n).catch(() => undefined)));
    if (currents.every((c) => c && pages.has(c))) return;
    await commitRelease(`release for a test on its own ${pages.size}`);
    const out = await release("main");
    assert.equal(out.code, 0, out.stdout);
  }

  /** Every node serves a release and keeps another one of this repository, to swap between. */
  async function ensureTwoKept(): Promise<void> {
    await ensureServing();
    const kept = async (node: WebNode) => (await readdir(join(node.root, "releases"))).filter((n) => pages.has(n)).length;
    if ((await Promise.all(nodes.map(kept))).every((n) => n >= 2)) return;
    await commitRelease(`second release for a test on its own ${pages.size}`);
    const out = await release("main");
    assert.equal(out.code, 0, out.stdout);
  }

  /**
   * A publish sequence newer than anything the nodes have seen: tests that send activations
   * themselves must not depend on what earlier tests left behind.
   */
  async function nextSequence(): Promise<number> {
    const states = await Promise.all(nodes.map(async (n) => (JSON.parse(await readFile(join(n.root, "state.json"), "utf8").catch(() => "{}")) as { sequence?: number }).sequence ?? 0));
    return Math.max(Date.now(), ...states) + 1;
  }

  before(async () => {
    fleet = await TestFleet.start({ heartbeatSeconds: 1 });
    repo = await SiteRepo.create(join(fleet.dir, "site"));
    await fleet.startCoordinator();
    nodes.push(await startWebNode("web-1", { path: "/.bosun-release", marker: true }));
    nodes.push(await startWebNode("web-2", { path: "/must-exist.txt", marker: false }));
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.nginx.stop()));
    await fleet.close();
  });

  it("`bosun release --wait` prepares on every web node, swaps them, and nginx serves the new commit; rollback returns it", async () => {
    const a = await commitRelease("release A");
    const first = await release("main");
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.result?.commit, a);
    assert.deepEqual(first.result?.active.sort(), ["web-1", "web-2"]);
    for (const node of nodes) assert.equal(await serving(node), pages.get(a));

    const b = await commitRelease("release B");
    const second = await release("main");
    assert.equal(second.code, 0, second.stderr);
    for (const node of nodes) assert.equal(await serving(node), pages.get(b));

    const back = await fleet.bosun(["rollback", "--app", "demo", "--wait", "--json"], ci());
    assert.equal(back.code, 0, back.stderr);
    assert.equal((JSON.parse(back.stdout) as { to: string }).to, a);
    for (const node of nodes) assert.equal(await serving(node), pages.get(a));

    // The coordinator learns what each node serves from heartbeats.
    await fleet.waitForEvent((e) => e.type === "heartbeat" && (e.payload as { report: { web?: { releases: Record<string, string> } } }).report.web?.releases["demo"] === a, "a heartbeat showing A");
    const listed = await fleet.bosun(["releases", "--app", "demo", "--json"]);
    const shown = JSON.parse(listed.stdout) as { desired: { commit: string; rollback: boolean }; nodes: { node: string; serving: string }[] };
    assert.equal(shown.desired.commit, a);
    assert.equal(shown.desired.rollback, true);
  });

  it("serves every request, never a mix of releases, while `current` is swapped 40 times under load", async () => {
    await ensureTwoKept();
    const node = nodes[0]!;
    // Swap between the current release and another kept one, an even number of times, so the node ends where it began.
    const start = (await currentOf(node))!;
    const other = (await readdir(join(node.root, "releases"))).find((n) => pages.has(n) && n !== start);
    assert.ok(other, "two prepared releases to swap between");
    const kept = [other, start];
    const known = new Set(kept.map((c) => pages.get(c)!));
    const load = loadGenerator(`${node.nginx.url}/`, () => known);
    let sequence = await nextSequence();
    for (let i = 0; i < 40; i++) {
      const commit = kept[i % 2]!;
      const command = fleet.command("activate", { app: "demo", commit, sequence: ++sequence }, { nodes: [node.id] });
      await fleet.publish(command);
      const done = await fleet.waitForNodeEvent(command.id, node.id, "done");
      assert.equal((done.payload as { result: { status: string } }).result.status, "active");
    }
    const stats = await load.stop();
    assert.ok(stats.requests > 200, `load ran (${stats.requests} requests)`);
    assert.equal(stats.failed, 0, `no failed requests: ${stats.errors.join("; ")}`);
    assert.equal(stats.mixed, 0, "no response mixed two releases");
  });

  it("every node swaps at the moment the activate command names, not when the command reaches it", async () => {
    await ensureTwoKept();
    const start = await currentOf(nodes[0]!);
    // A release both nodes keep besides the one they serve (the nodes serve the same one).
    const keptBy = async (node: WebNode) => (await readdir(join(node.root, "releases"))).filter((n) => pages.has(n) && n !== start);
    const [first, second] = await Promise.all(nodes.map(keptBy));
    const other = first!.find((c) => second!.includes(c))!;
    for (const [commit, delay] of [[other, 1500], [start!, 800]] as const) {
      const at = Date.now() + delay;
      const command = fleet.command("activate", { app: "demo", commit, sequence: await nextSequence(), at: new Date(at).toISOString() }, { roles: ["web"] });
      await fleet.publish(command);
      const swaps = await Promise.all(nodes.map(async (node) => ((await fleet.waitForNodeEvent(command.id, node.id, "done")).payload as { result: { swappedAt: number } }).result.swappedAt));
      for (const swappedAt of swaps) {
        // The command reaches the nodes long before the moment: swapping on arrival fails here.
        assert.ok(swappedAt >= at, `swapped ${at - swappedAt} ms before the named moment`);
        // Lateness is the benchmark's to measure (bench/release.ts); here only a generous bound.
        assert.ok(swappedAt - at < 2000, `swapped ${swappedAt - at} ms after the named moment`);
      }
    }
  });

  it("a release holding a link out of itself is refused by every node, and nginx follows no link below its root", async () => {
    await ensureServing();
    const before = new Map(await Promise.all(nodes.map(async (n) => [n.id, await currentOf(n)] as const)));
    await repo.commit({ ...base, "index.html": SiteRepo.page("leaky"), "leak.txt": { link: "/etc/passwd" } }, "leaky release");
    const leaky = await release("main");
    assert.equal(leaky.code, 1);
    assert.deepEqual(leaky.result?.failed.map((f) => `${f.node}:${f.phase}`).sort(), ["web-1:prepare", "web-2:prepare"]);
    assert.match(leaky.result!.failed[0]!.detail, /UNSAFE_LINK symbolic link leak\.txt -> \/etc\/passwd is absolute/);
    for (const node of nodes) assert.equal(await currentOf(node), before.get(node.id), "current did not move");
    await repo.commit({ "leak.txt": null }, "without the link");

    // Defence in depth: a link planted in a served release (as if the check were bypassed) is not followed.
    const node = nodes[0]!;
    const current = await currentOf(node);
    assert.ok(current, "the node serves a release");
    const planted = join(node.root, "releases", current, "planted.txt");
    await symlink("/etc/passwd", planted);
    try {
      const response = await fetch(`${node.nginx.url}/planted.txt`);
      assert.ok([403, 404].includes(response.status), `nginx answered ${response.status}`);
      assert.doesNotMatch(await response.text(), /root:/);
      assert.equal((await fetch(`${node.nginx.url}/`)).status, 200, "the release itself, behind the `current` link, is served");
    } finally {
      await rm(planted, { force: true });
    }
  });

  it("nothing a node would refuse is recorded as desired, and a later plain release does not inherit it", async () => {
    await ensureServing();
    const desired = async () => (JSON.parse((await fleet.bosun(["releases", "--app", "demo", "--json"])).stdout) as { desired: { commit: string; repo: string } }).desired;
    const before = await desired();
    const other = await SiteRepo.create(join(fleet.dir, `other-${Date.now()}`));
    await other.commit({ "index.html": "not ours" });
    const publisher = { ...ci(), BOSUN_APPS: JSON.stringify({ demo: { root: join(fleet.dir, "publisher"), repos: [repo.dir] } }) };

    // A publisher that knows the app's allowlist refuses at once, with or without --wait.
    for (const wait of [[], ["--wait"]]) {
      const refused = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--repo", other.dir, ...wait], publisher);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /Invalid --repo: .* is not on app demo's allowlist/);
    }
    // One that does not know it cannot record a release before the nodes have checked it.
    const unchecked = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--repo", other.dir], ci());
    assert.equal(unchecked.code, 2);
    assert.match(unchecked.stderr, /Cannot check repository .* without --wait the release is recorded before any node checks it/);
    // With --wait the nodes check it first; their refusal is not recorded.
    const waited = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--repo", other.dir, "--wait", "--timeout", "30"], ci());
    assert.equal(waited.code, 1);
    assert.match(waited.stdout, /REPO_NOT_ALLOWED/);
    assert.deepEqual(await desired(), before, "the desired release is as it was");

    // The next plain release reuses the recorded repository, which the nodes accepted.
    const next = await commitRelease("after the refusals");
    const plain = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--wait", "--timeout", "30", "--json"], ci());
    assert.equal(plain.code, 0, plain.stdout);
    assert.equal((await desired()).commit, next);
    for (const node of nodes) assert.equal(await currentOf(node), next);
  });

  it("refuses an unknown ref, an unreachable repo and an app name that escapes the deploy root", async () => {
    const unknown = await release("no-such-branch");
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /Cannot resolve ref "no-such-branch" in .*not found/);
    const unreachable = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--repo", join(fleet.dir, "missing.git"), "--wait"]);
    assert.equal(unreachable.code, 2);
    assert.match(unreachable.stderr, /Cannot resolve ref "main" in .*missing\.git/);
    const escape = await fleet.bosun(["release", "--app", "../../etc", "--ref", "main", "--repo", repo.dir]);
    assert.equal(escape.code, 2);
    assert.match(escape.stderr, /Invalid --app/);
    const signed = fleet.command("release", { app: "../../etc", repo: repo.dir, commit: "a".repeat(40), sequence: 1, activate: true }, { roles: ["web"] });
    await fleet.publish(signed);
    const refused = await fleet.waitForNodeEvent(signed.id, "web-1", "refused");
    assert.equal((refused.payload as { reason: string }).reason, "bad-payload");
  });

  it("a repo off the allowlist, a failing build and a hanging build leave the site on its release, and the next release works", async () => {
    await ensureServing();
    const before = new Map(await Promise.all(nodes.map(async (n) => [n.id, await currentOf(n)] as const)));
    const other = await SiteRepo.create(join(fleet.dir, `other-${Date.now()}`));
    await other.commit({ "index.html": "not ours" });
    const offList = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--repo", other.dir, "--wait", "--timeout", "30", "--json"]);
    assert.equal(offList.code, 1);
    assert.match(offList.stdout, /REPO_NOT_ALLOWED/);

    const desiredBefore = JSON.parse((await fleet.bosun(["releases", "--app", "demo", "--json"])).stdout) as { desired: { commit: string } };
    const broken = await commitRelease("broken build", { "build.sh": "echo compiling; exit 3\n" });
    const failedBuild = await release("main");
    const desiredAfter = JSON.parse((await fleet.bosun(["releases", "--app", "demo", "--json"])).stdout) as { desired: { commit: string } };
    assert.equal(desiredAfter.desired.commit, desiredBefore.desired.commit, "a stopped rollout leaves the desired release as it was");
    assert.equal(failedBuild.code, 1);
    assert.deepEqual(failedBuild.result?.failed.map((f) => `${f.node}:${f.phase}`).sort(), ["web-1:prepare", "web-2:prepare"]);
    assert.match(failedBuild.result!.failed[0]!.detail, /BUILD_FAILED build \["sh","build.sh"\] exited with code 3/);

    const hanging = await commitRelease("hanging build", { "build.sh": "sleep 30\n" });
    const hung = await release("main");
    assert.equal(hung.code, 1);
    assert.match(hung.result!.failed[0]!.detail, /BUILD_TIMEOUT .*did not finish within 2s/);

    for (const node of nodes) {
      assert.equal(await currentOf(node), before.get(node.id), "current did not move");
      const entries = await readdir(join(node.root, "releases"));
      assert.ok(!entries.includes(broken) && !entries.includes(hanging), "no failed release was kept");
      assert.ok(!entries.some((e) => e.startsWith(".tmp-")), "nothing half-written is left");
      assert.equal(await serving(node), pages.get(before.get(node.id)!));
    }
    const good = await commitRelease("release C", { "build.sh": "exit 0\n" });
    const next = await release("main");
    assert.equal(next.code, 0, next.stdout);
    for (const node of nodes) assert.equal(await serving(node), pages.get(good));
  });

  it("a failed health check swaps that node back; past the failure budget the rollout stops and switched nodes go back", async () => {
    await ensureServing();
    const before = new Map(await Promise.all(nodes.map(async (n) => [n.id, await currentOf(n)] as const)));
    // web-2 checks /must-exist.txt, which this release removes.
    await commitRelease("release D without the health file", { "must-exist.txt": null });
    const result = await release("main", "--batch", "1", "--max-failures", "0");
    assert.equal(result.code, 1);
    assert.deepEqual(result.result?.active, ["web-1"]);
    assert.deepEqual(result.result?.failed.map((f) => `${f.node}:${f.phase}`), ["web-2:activate"]);
    assert.match(result.result!.failed[0]!.detail, /HEALTH_CHECK_FAILED .*must-exist\.txt answered 404/);
    assert.deepEqual(result.result?.rolledBack, ["web-1"]);
    for (const node of nodes) {
      assert.equal(await currentOf(node), before.get(node.id));
      assert.equal(await serving(node), pages.get(before.get(node.id)!));
    }
  });

  it("never moves back to an older release when two releases arrive out of order", async () => {
    const older = await commitRelease("release E");
    const newer = await commitRelease("release F");
    // Publish sequences a few steps apart, all newer than anything the nodes have seen.
    const now = await nextSequence();
    const newerCommand = fleet.command("release", { app: "demo", repo: repo.dir, commit: newer, sequence: now + 2, activate: true }, { roles: ["web"] });
    const olderCommand = fleet.command("release", { app: "demo", repo: repo.dir, commit: older, sequence: now + 1, activate: true }, { roles: ["web"] });
    // The newer release lands first; the older one, published earlier, arrives after it.
    await fleet.publish(newerCommand);
    for (const node of nodes) await fleet.waitForNodeEvent(newerCommand.id, node.id, "done", 30_000);
    await fleet.publish(olderCommand);
    for (const node of nodes) {
      const late = await fleet.waitForNodeEvent(olderCommand.id, node.id, "done", 30_000);
      assert.equal((late.payload as { result: { status: string } }).result.status, "skipped");
      assert.equal(await currentOf(node), newer);
      assert.equal(await serving(node), pages.get(newer));
    }
    // A rollback issued before the newer release, arriving after it, is just as old.
    const staleRollback = fleet.command("rollback", { app: "demo", to: older, sequence: now + 1 }, { roles: ["web"] });
    await fleet.publish(staleRollback);
    for (const node of nodes) {
      const skipped = await fleet.waitForNodeEvent(staleRollback.id, node.id, "done", 30_000);
      assert.equal((skipped.payload as { result: { status: string } }).result.status, "skipped");
      assert.equal(await currentOf(node), newer);
    }
    // Two releases published together, in either order of handling: the newest wins everywhere.
    const first = await commitRelease("release F2");
    const second = await commitRelease("release F3");
    const together = [
      fleet.command("release", { app: "demo", repo: repo.dir, commit: second, sequence: now + 4, activate: true }, { roles: ["web"] }),
      fleet.command("release", { app: "demo", repo: repo.dir, commit: first, sequence: now + 3, activate: true }, { roles: ["web"] }),
    ];
    await Promise.all(together.map((c) => fleet.publish(c)));
    for (const node of nodes) {
      for (const c of together) await fleet.waitForNodeEvent(c.id, node.id, "done", 30_000);
      assert.equal(await currentOf(node), second);
    }
  });

  it("keeps the configured number of releases besides current and previous", async () => {
    await ensureServing();
    for (const node of nodes) {
      const kept = (await readdir(join(node.root, "releases"))).filter((e) => !e.startsWith("."));
      assert.ok(kept.length <= 2 + 2, `at most keep(2) + current + previous: ${kept.length}`);
      assert.ok(kept.includes((await currentOf(node))!));
    }
  });

  it("`bosun agent --sync-once` brings a new node to the desired release, and is quick when already current", async () => {
    await ensureServing();
    const desired = (JSON.parse((await fleet.bosun(["releases", "--app", "demo", "--json"])).stdout) as { desired: { commit: string } }).desired.commit;
    const root = join(fleet.dir, "www", "web-new", "demo");
    const env = { BOSUN_APPS: JSON.stringify({ demo: { root, repos: [repo.dir], build: { command: ["sh", "build.sh"] } } }) };
    const first = await fleet.bosun(["agent", "--sync-once", "--node-id", "web-new", "--role", "web", "--json"], env);
    assert.equal(first.code, 0, first.stderr);
    type Synced = { roles: { role: string; items: { name: string; action: string; detail?: string }[] }[] };
    const items = (out: string) => (JSON.parse(out) as Synced).roles.flatMap((r) => r.items.map((i) => `${r.role}:${i.name}:${i.action}:${i.detail ?? ""}`));
    assert.deepEqual(items(first.stdout), [`web:demo:activated:${desired}`]);
    assert.equal((await readlink(join(root, "current"))).split("/").pop(), desired);
    const again = await fleet.bosun(["agent", "--sync-once", "--node-id", "web-new", "--role", "web", "--json"], env);
    assert.deepEqual(items(again.stdout), [`web:demo:already-current:${desired}`]);
  });

  it("an agent that starts after a release was published brings its node to it once subscribed", async () => {
    await ensureServing();
    const desired = (JSON.parse((await fleet.bosun(["releases", "--app", "demo", "--json"])).stdout) as { desired: { commit: string } }).desired.commit;
    const root = join(fleet.dir, "www", "web-late", "demo");
    const late = await fleet.startAgent("web-late", ["web"], { BOSUN_APPS: JSON.stringify({ demo: { root, repos: [repo.dir], build: { command: ["sh", "build.sh"] } } }) });
    await late.waitForLog((r) => r.msg === "app checked against its desired release after subscribing" && r["action"] === "activated", "the late node to catch up", 30_000);
    assert.equal((await readlink(join(root, "current"))).split("/").pop(), desired);
    await late.stop();
  });

  it("an agent killed mid-prepare resumes after restart; nothing half-written becomes current", async () => {
    await ensureServing();
    const node = nodes[0]!;
    const before = await currentOf(node);
    const slow = await commitRelease("release G with a slow build", { "build.sh": "sleep 1\n" });
    const command = fleet.command("release", { app: "demo", repo: repo.dir, commit: slow, sequence: await nextSequence(), activate: true }, { nodes: [node.id] });
    await fleet.publish(command);
    await node.agent.waitForLog((r) => r.msg === "building release" && r["commandId"] === command.id, "the build to start");
    node.agent.child.kill("SIGKILL");
    await node.agent.exited;
    assert.equal(await currentOf(node), before, "the killed prepare changed nothing");
    node.agent = await fleet.startAgent(node.id, ["web"], node.env);
    const done = await fleet.waitForNodeEvent(command.id, node.id, "done", 30_000);
    assert.equal((done.payload as { result: { status: string } }).result.status, "active");
    const acks = fleet.eventsFor(command.id, "ack").map((e) => (e.payload as { resumed: boolean }).resumed);
    assert.deepEqual(acks, [false, true]);
    assert.equal(await currentOf(node), slow);
    assert.equal(await serving(node), pages.get(slow));
    assert.ok(!(await readdir(join(node.root, "releases"))).some((e) => e.startsWith(".tmp-")));
  });
});
