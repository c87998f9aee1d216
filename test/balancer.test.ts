import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { GetQueueUrlCommand, ListQueueTagsCommand } from "@aws-sdk/client-sqs";
import type { Envelope } from "@bosun/core";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";
import { needs } from "./helpers/tools.ts";
import { until } from "./helpers/until.ts";
import { balancerSettings } from "./helpers/balancer.ts";
import { Backend, freePort, loadGenerator } from "./helpers/web.ts";
import { RuntimeApi } from "../packages/agent/src/roles/balancer/runtime.ts";

const tools = needs({ haproxy: "haproxy" });

describe("balancer role", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let lb: TestProcess;
  let listenPort: number;
  let runtime: RuntimeApi;
  let haproxyDir: string;
  const backends: Backend[] = [];
  let env: Record<string, string>;

  const backend = async (name: string) => {
    const b = await new Backend(name).start();
    backends.push(b);
    return b;
  };

  const webEvent = (type: "node-up" | "node-down", node: string, port?: number, host = "127.0.0.1"): Envelope => fleet.nodeEvent(type, node, { host, ...(port ? { port } : {}) });

  const servers = async () => new Map((await runtime.servers("web")).map((s) => [s.name, s]));
  const get = async (path = "/") => {
    const response = await fetch(`http://127.0.0.1:${listenPort}${path}`);
    return { status: response.status, body: await response.text() };
  };
  /** Waits until requests through HAProxy reach every named backend. */
  const reaches = (names: string[]) =>
    until(async () => {
      const seen = new Set<string>();
      for (let i = 0; i < names.length * 4; i++) seen.add((await get()).body);
      return names.every((n) => seen.has(n)) ? seen : undefined;
    }, `traffic through HAProxy to reach ${names.join(", ")}`);
  const updatesAfter = (since: number) =>
    fleet.events.items.filter((e) => e.type === "lb-update" && Date.parse(e.issuedAt) >= since) as (Envelope & { payload: { added: string[]; removed: string[]; refused: { node: string; reason: string }[]; via: string } })[];

  /** Requests through HAProxy from four loops until stopped, counting failures (any status but 200, any error). */
  const startLoad = () => loadGenerator(`http://127.0.0.1:${listenPort}/`, () => new Set(backends.map((b) => b.name)), 4);

  /**
   * Two web nodes in the backend, load through HAProxy all along, and slow requests sent until
   * one of them is being served by `slow`; `slowRequests` collects them all (each with when it ended).
   */
  async function slowRequestInFlight(slow: Backend, steady: Backend, ms: number, load: { current?: ReturnType<typeof startLoad> }, slowRequests: Promise<{ status: number; body: string; at: number }>[]): Promise<void> {
    for (const b of [slow, steady]) await fleet.publish(webEvent("node-up", b.name, b.port));
    await reaches([slow.name, steady.name]);
    await until(async () => ((await servers()).get(slow.name)?.status === "UP" ? true : undefined), `${slow.name} to be checked up`);
    load.current = startLoad();
    await until(async () => {
      slowRequests.push(get(`/slow?ms=${ms}`).then((r) => ({ ...r, at: Date.now() })));
      await new Promise((r) => setTimeout(r, 50));
      return slow.inFlight > 0 ? true : undefined;
    }, `a slow request in flight on ${slow.name}`);
  }

  /** Takes nodes out again, so each test leaves the backend as it found it. */
  async function remove(names: string[]): Promise<void> {
    await Promise.all(names.map((n) => fleet.publish(webEvent("node-down", n))));
    await until(async () => {
      const now = await servers();
      return names.some((n) => now.has(n)) ? undefined : true;
    }, `${names.join(", ")} to leave the backend`);
  }

  async function startBalancer(): Promise<TestProcess> {
    const proc = await fleet.startAgent("lb-1", ["balancer"], env);
    await proc.waitForLog((r) => r.msg === "balancer ready", "HAProxy to start", 20_000);
    return proc;
  }

  before(async () => {
    // Nodes announced by hand send no heartbeats: the coordinator must not declare them lost mid-test.
    fleet = await TestFleet.start({ lostAfterSeconds: 600 });
    await fleet.startCoordinator();
    listenPort = await freePort();
    haproxyDir = join(fleet.dir, "haproxy-lb-1");
    env = {
      BOSUN_BALANCER: balancerSettings(haproxyDir, listenPort, {
        check: { path: "/health", interMs: 300, fall: 2, rise: 1 },
        // Fifty events published from this process (which also runs the emulator) can take over a second on a loaded machine.
        debounceMs: 2000,
        pollSeconds: 0.3,
        resyncSeconds: 5,
        drainTimeoutSeconds: 30,
        networks: ["127.0.0.0/8"],
      }),
    };
    runtime = new RuntimeApi({ socket: join(haproxyDir, "admin.sock") });
    lb = await startBalancer();
  });

  after(async () => {
    await fleet?.close();
    await Promise.all(backends.map((b) => b.close()));
    // The agent stops its HAProxy; this proves it did (a left-over one would hold the port).
    const pid = Number.parseInt(await readFile(join(haproxyDir, "haproxy.pid"), "utf8").catch(() => ""), 10);
    if (pid > 0 && existsSync(`/proc/${pid}`)) {
      process.kill(pid, "SIGKILL");
      assert.fail(`haproxy ${pid} outlived its agent`);
    }
  });

  it("a web agent's node-up adds it through the runtime API: no reload, traffic reaches it, and the config and state file hold it", async () => {
    const site = await backend("web-a");
    const pid = await runtime.pid();
    const since = Date.now() - 1000;
    let web: TestProcess | undefined;
    try {
      web = await fleet.startAgent("web-a", ["web"], { BOSUN_WEB: JSON.stringify({ advertise: { host: "127.0.0.1", port: site.port } }) });
      await reaches(["web-a"]);
      assert.equal(await runtime.pid(), pid, "the HAProxy worker is the same: no reload");
      // The update's event goes out once the change is mirrored into the files.
      const update = await until(async () => updatesAfter(since).find((e) => e.payload.added.includes("web-a")), "web-a's update");
      assert.equal(update.payload.via, "runtime");
      const config = await readFile(join(haproxyDir, "haproxy.cfg"), "utf8");
      assert.match(config, new RegExp(`^  server web-a 127\\.0\\.0\\.1:${site.port} check inter 300 fall 2 rise 1$`, "m"));
      assert.match(await readFile(join(haproxyDir, "server-state"), "utf8"), /\bweb-a 127\.0\.0\.1\b/);
      const health = await fleet.waitForEvent((e) => e.type === "lb-health" && (e.payload as { backend: string; to: string }).backend === "web-a" && (e.payload as { to: string }).to === "up", "web-a reported healthy");
      assert.equal((health.payload as { node: { id: string } }).node.id, "lb-1");

      // bosun lb status shows it from the balancer's heartbeat.
      const status = await until(async () => {
        const out = await fleet.bosun(["lb", "status", "--json"]);
        const lbs = (JSON.parse(out.stdout) as { balancers: { node: string; report?: { backends: { node: string; state: string; health: string }[] } }[] }).balancers;
        const entry = lbs.find((b) => b.node === "lb-1")?.report?.backends.find((b) => b.node === "web-a");
        return entry?.health === "up" ? entry : undefined;
      }, "bosun lb status to show web-a healthy");
      assert.equal(status.state, "ready");

      // Decommissioned: its node-down takes it out, still without a reload.
      const decommission = fleet.command("decommission", {}, { nodes: ["web-a"] });
      await fleet.publish(decommission);
      await web.exited;
      await until(async () => updatesAfter(since).find((e) => e.payload.removed.includes("web-a")), "web-a's removal");
      assert.equal((await servers()).has("web-a"), false);
      assert.equal(await runtime.pid(), pid, "removed without a reload");
      assert.doesNotMatch(await readFile(join(haproxyDir, "haproxy.cfg"), "utf8"), /server web-a /);
      assert.equal((await get()).status, 503, "no backend left to serve");
    } finally {
      if (web && web.child.exitCode === null && web.child.signalCode === null) {
        await fleet.publish(fleet.command("decommission", {}, { nodes: ["web-a"] }));
        await web.exited;
      }
      await remove(["web-a"]);
    }
  });

  it("a burst of fifty node-ups is one update, and fifty node-downs another", async () => {
    const site = await backend("burst");
    const names = Array.from({ length: 50 }, (_, i) => `burst-${i}`);
    const since = Date.now() - 1000;
    try {
      await Promise.all(names.map((n) => fleet.publish(webEvent("node-up", n, site.port))));
      const update = await fleet.waitForEvent((e) => e.type === "lb-update" && Date.parse(e.issuedAt) >= since && (e.payload as { added: string[] }).added.length > 0, "the burst's update", 30_000);
      assert.deepEqual([...(update.payload as { added: string[] }).added].sort(), [...names].sort(), "every node of the burst in the one update");
      assert.equal((update.payload as { via: string }).via, "runtime");
      assert.equal((await servers()).size, 50);

      const downSince = Date.now() - 1000;
      await Promise.all(names.map((n) => fleet.publish(webEvent("node-down", n))));
      const down = await fleet.waitForEvent((e) => e.type === "lb-update" && Date.parse(e.issuedAt) >= downSince && (e.payload as { removed: string[] }).removed.length > 0, "the burst's removal", 30_000);
      assert.equal((down.payload as { removed: string[] }).removed.length, 50);
      assert.equal(updatesAfter(since).filter((e) => e.payload.added.length > 0).length, 1, "one update added the burst");
      assert.equal((await servers()).size, 0);
    } finally {
      await remove(names);
    }
  });

  it("a restarted balancer agent reconciles the full list from the fleet record", async () => {
    const sites = await Promise.all(["keep-1", "keep-2", "keep-3"].map(backend));
    try {
      await Promise.all(sites.map((s) => fleet.publish(webEvent("node-up", s.name, s.port))));
      await fleet.waitForNodes(sites.map((s) => s.name));
      await reaches(sites.map((s) => s.name));
      const oldMaster = Number.parseInt(await readFile(join(haproxyDir, "haproxy.pid"), "utf8"), 10);

      const stopped = await lb.stop(30_000);
      assert.equal(stopped.code, 0);
      assert.equal(existsSync(`/proc/${oldMaster}`), false, "the agent stopped its HAProxy");
      lb = await startBalancer();
      // Its event queue is tagged as lb-1's own, so the coordinator removes it once lb-1 is gone.
      const { QueueUrl } = await fleet.clients.sqs.send(new GetQueueUrlCommand({ QueueName: `bosun-${fleet.cluster}-lb-lb-1` }));
      const { Tags } = await fleet.clients.sqs.send(new ListQueueTagsCommand({ QueueUrl }));
      assert.deepEqual(Tags, { "bosun:cluster": fleet.cluster, "bosun:kind": "node", "bosun:node": "lb-1", "bosun:role": "balancer" });
      // Present at once, from the fleet record: no event announced them to this run.
      assert.deepEqual([...(await servers()).keys()].sort(), ["keep-1", "keep-2", "keep-3"]);
      await reaches(sites.map((s) => s.name));
    } finally {
      await remove(sites.map((s) => s.name));
    }
  });

  /**
   * Two backends under load through HAProxy, a slow request in flight on the first ("PREFIX-slow")
   * while `leave` makes it go; then the load stops and not one of its requests may have failed.
   */
  const leavingUnderLoad = async (
    prefix: string,
    slowMs: number,
    leave: (slow: Backend, steady: Backend, slowRequests: Promise<{ status: number; body: string; at: number }>[]) => Promise<void>,
  ): Promise<void> => {
    const [slow, steady] = await Promise.all([backend(`${prefix}-slow`), backend(`${prefix}-steady`)]);
    const running: { current?: ReturnType<typeof startLoad> } = {};
    const slowRequests: Promise<{ status: number; body: string; at: number }>[] = [];
    try {
      await slowRequestInFlight(slow, steady, slowMs, running, slowRequests);
      await leave(slow, steady, slowRequests);
      const stats = await running.current!.stop();
      assert.ok(stats.requests > 10, `load ran: ${stats.requests} requests`);
      assert.equal(stats.failed, 0, `failed requests under load: ${stats.errors.slice(0, 5).join("; ")}`);
    } finally {
      await running.current?.stop();
      await Promise.allSettled(slowRequests);
      await remove([slow.name, steady.name]);
    }
  };

  it("a drain waits for an in-flight slow request to finish before the node goes, and no request fails", async () => {
    await leavingUnderLoad("drain", 3000, async (slow, steady, slowRequests) => {

      const drain = await fleet.bosun(["lb", "drain", slow.name, "--json", "--timeout", "60"]);
      const drainedAt = Date.now();
      assert.equal(drain.code, 0, drain.stdout + drain.stderr);
      const answer = (JSON.parse(drain.stdout) as { result: { nodes: { node: string; result: { drained: boolean; sessionsLeft: number; waitedMs: number } }[] } }).result.nodes[0]!;
      assert.equal(answer.node, "lb-1");
      assert.equal(answer.result.drained, true);
      assert.equal(slow.inFlight, 0, "the drain answered only once drain-slow's request had finished");
      const finished = await Promise.all(slowRequests);
      assert.ok(finished.every((r) => r.status === 200), `slow requests: ${finished.map((r) => r.status).join(",")}`);
      assert.ok(finished.filter((r) => r.body === slow.name).every((r) => r.at <= drainedAt), "drain-slow's slow requests finished before the drain was done");
      assert.ok(answer.result.waitedMs > 0);
      assert.equal((await servers()).get(slow.name)?.status, "MAINT");

      await fleet.publish(webEvent("node-down", slow.name));
      await until(async () => ((await servers()).has(slow.name) ? undefined : true), "drain-slow to leave HAProxy");
      const served = slow.served;
      for (let i = 0; i < 10; i++) assert.equal((await get()).body, steady.name);
      assert.equal(slow.served, served, "nothing reaches a drained node");
    });
  });

  it("a web node decommissioned under load is drained before it goes: its slow request in flight finishes, and no request fails", async () => {
    await leavingUnderLoad("leave", 2500, async (slow, _steady, slowRequests) => {
      const since = Date.now() - 1000;
      // A node-down with reason "decommissioned", as a web agent sends when it is decommissioned.
      await fleet.publish(webEvent("node-down", slow.name));
      await lb.waitForLog((r) => r.msg === "a web node left on purpose: draining it before it goes" && r["backend"] === slow.name, "leave-slow to drain");
      const update = await until(async () => updatesAfter(since).find((e) => e.payload.removed.includes(slow.name)), "leave-slow's removal", 30_000);
      const finished = await Promise.all(slowRequests);
      assert.ok(finished.every((r) => r.status === 200), `slow requests: ${finished.map((r) => r.status).join(",")}`);
      // Removing it would have cut that request (its sessions are shut down): it was served whole instead.
      assert.ok(finished.some((r) => r.body === slow.name), "a slow request was in flight on leave-slow as it left, and finished");
      assert.equal(update.payload.via, "runtime");
    });
  });

  it("with the runtime socket gone, a node-up is applied by a checked reload: a new HAProxy takes over, no request finds no server", async () => {
    const [first, second] = await Promise.all([backend("handover-1"), backend("handover-2")]);
    let load: ReturnType<typeof startLoad> | undefined;
    try {
      const healthySince = Date.now() - 1000;
      await fleet.publish(webEvent("node-up", first.name, first.port));
      await reaches([first.name]);
      // Its check's verdict is in the server-state file once reported: a new HAProxy starts from it.
      await fleet.waitForEvent((e) => e.type === "lb-health" && Date.parse(e.issuedAt) >= healthySince && (e.payload as { backend: string; to: string }).backend === first.name && (e.payload as { to: string }).to === "up", `${first.name} reported healthy`);
      const pid = await runtime.pid();
      load = startLoad();
      await unlink(join(haproxyDir, "admin.sock"));
      const since = Date.now() - 1000;
      await fleet.publish(webEvent("node-up", second.name, second.port));
      const update = await until(async () => updatesAfter(since).find((e) => e.payload.added.includes(second.name)), "the update by reload", 30_000);
      assert.equal(update.payload.via, "reload");
      assert.notEqual(await runtime.pid(), pid, "a new HAProxy answers on a new runtime socket");
      assert.deepEqual([...(await servers()).keys()].sort(), [first.name, second.name]);
      await reaches([first.name, second.name]);
      const stats = await load.stop();
      assert.ok(stats.requests > 10, `load ran: ${stats.requests} requests`);
      // The old HAProxy closes its idle keep-alive connections as it stops: a client that sends on
      // one at that moment fails, once per connection at most. (The runtime path loses none: see the drain test.)
      assert.ok(stats.failed <= 4, `at most one failure per client connection: ${stats.failed} (${stats.errors.slice(0, 5).join("; ")})`);
      assert.ok(stats.errors.every((e) => !e.includes("503")), `no request found no server: ${stats.errors.join("; ")}`);
    } finally {
      await load?.stop();
      await remove([first.name, second.name]);
    }
  });

  it("an HAProxy killed under the agent is started again from the mirrored config, with an alert", async () => {
    const site = await backend("crash-1");
    try {
      const since = Date.now() - 1000;
      await fleet.publish(webEvent("node-up", site.name, site.port));
      await until(async () => updatesAfter(since).find((e) => e.payload.added.includes(site.name)), "crash-1's update");
      const master = Number.parseInt(await readFile(join(haproxyDir, "haproxy.pid"), "utf8"), 10);
      const worker = await runtime.pid();
      const killedAt = Date.now() - 1000;
      process.kill(master, "SIGKILL");
      const alert = await fleet.waitForEvent((e) => e.type === "alert" && Date.parse(e.issuedAt) >= killedAt && (e.payload as { code: string }).code === "HAPROXY_EXITED", "the HAPROXY_EXITED alert");
      assert.match((alert.payload as { message: string }).message, new RegExp(`haproxy \\(pid ${master}\\) exited with SIGKILL`));
      await lb.waitForLog((r) => r.msg === "haproxy started again", "HAProxy to start again", 20_000);
      assert.notEqual(Number.parseInt(await readFile(join(haproxyDir, "haproxy.pid"), "utf8"), 10), master);
      assert.deepEqual([...(await servers()).keys()], [site.name]);
      await reaches([site.name]);
      // The killed master's worker notices and leaves by itself.
      await until(async () => (existsSync(`/proc/${worker}`) ? undefined : true), `the old worker ${worker} to exit`);
    } finally {
      await remove([site.name]);
    }
  });

  it("bad input is refused with a clear event and the balancer goes on: an unknown node, a malformed command, an address outside the networks", async () => {
    const site = await backend("good");
    try {
      const unknown = fleet.command("lb-drain", { node: "no-such-node" }, { roles: ["balancer"] });
      await fleet.publish(unknown);
      const failed = await fleet.waitForNodeEvent(unknown.id, "lb-1", "failed");
      assert.equal((failed.payload as { code: string }).code, "BACKEND_UNKNOWN");
      assert.match((failed.payload as { error: string }).error, /node no-such-node is not a backend of this balancer/);

      const malformed = fleet.command("lb-drain", { node: "bad node; del server web/x", timeoutSeconds: -1 }, { roles: ["balancer"] });
      await fleet.publish(malformed);
      const refused = await fleet.waitForNodeEvent(malformed.id, "lb-1", "refused");
      assert.equal((refused.payload as { reason: string }).reason, "bad-payload");
      assert.match((refused.payload as { detail: string }).detail, /payload\.node/);

      const since = Date.now() - 1000;
      await fleet.publish(webEvent("node-up", "outside", 8080, "10.9.8.7"));
      await fleet.publish(webEvent("node-up", site.name, site.port));
      const update = await until(async () => updatesAfter(since).find((e) => e.payload.added.includes(site.name)), "the good node's update");
      assert.deepEqual(update.payload.refused.map((r) => r.node), ["outside"]);
      assert.match(update.payload.refused[0]!.reason, /outside the allowed networks 127\.0\.0\.0\/8/);
      assert.equal((await servers()).has("outside"), false);

      // A second node-up for a node already present adds no second server: the next update is about another node only.
      const again = Date.now() - 1000;
      await fleet.publish(webEvent("node-up", site.name, site.port));
      await fleet.publish(webEvent("node-up", "good-2", site.port));
      const next = await until(async () => updatesAfter(again).find((e) => e.payload.added.includes("good-2")), "good-2's update");
      assert.deepEqual(next.payload.added, ["good-2"]);
      assert.deepEqual([...(await servers()).keys()].sort(), ["good", "good-2"]);

      // Still working: the good node takes traffic, and a drain and an enable of it are carried out.
      await reaches([site.name]);
      const drain = await fleet.bosun(["lb", "drain", site.name, "--json"]);
      assert.equal(drain.code, 0, drain.stdout + drain.stderr);
      assert.equal((await servers()).get(site.name)?.status, "MAINT");
      const enable = await fleet.bosun(["lb", "enable", site.name, "--json"]);
      assert.equal(enable.code, 0, enable.stdout + enable.stderr);
      await reaches([site.name]);
    } finally {
      await remove([site.name, "good-2", "outside"]);
    }
  });
});
