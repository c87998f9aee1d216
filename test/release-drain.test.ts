import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import type { Envelope } from "@bosun/core";
import { TestFleet } from "./helpers/fleet.ts";
import { balancerSettings } from "./helpers/balancer.ts";
import { needs } from "./helpers/tools.ts";
import { until } from "./helpers/until.ts";
import { Nginx, SiteRepo, freePort, loadGenerator } from "./helpers/web.ts";
import { RuntimeApi } from "../packages/agent/src/roles/balancer/runtime.ts";

const tools = needs({ nginx: "nginx", git: "git", haproxy: "haproxy" });

/**
 * `bosun release --drain`: two web nodes (nginx, real agents) behind a balancer's HAProxy; each
 * node is drained on the balancer, swapped, and put back before the next one, under load.
 */
describe("a release that drains node by node", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let repo: SiteRepo;
  let listenPort: number;
  let runtime: RuntimeApi;
  const nginxes: Nginx[] = [];
  const pages = new Set<string>();
  let firstCommit: string;

  const ci = () => ({ BOSUN_KEY_ID: "ci", BOSUN_SIGNING_KEY: join(fleet.dir, "keys", "ci.key") });
  const commitRelease = async (label: string) => {
    const page = SiteRepo.page(label, 4096);
    pages.add(page);
    return repo.commit({ "index.html": page }, label);
  };
  /** A release with CI's key (release, activate, rollback), or the on-call key that may also drain. */
  const release = async (key: "ci" | "oncall", ...flags: string[]) => {
    const out = await fleet.bosun(["release", "--app", "demo", "--ref", "main", "--repo", repo.dir, "--wait", "--timeout", "60", "--json", ...flags], key === "ci" ? ci() : {});
    return { code: out.code, result: JSON.parse(out.stdout) as { active: string[]; failed: { node: string; phase: string; detail: string }[]; ok: boolean }, text: out.stdout + out.stderr };
  };

  before(async () => {
    fleet = await TestFleet.start({ heartbeatSeconds: 1, lostAfterSeconds: 600 });
    repo = await SiteRepo.create(join(fleet.dir, "site"));
    await fleet.startCoordinator();
    listenPort = await freePort();
    const haproxyDir = join(fleet.dir, "haproxy-lb-1");
    runtime = new RuntimeApi({ socket: join(haproxyDir, "admin.sock") });
    const lb = await fleet.startAgent("lb-1", ["balancer"], {
      BOSUN_BALANCER: balancerSettings(haproxyDir, listenPort, {
        check: { path: "/", interMs: 300, fall: 2, rise: 1 },
        debounceMs: 200,
        pollSeconds: 0.3,
        drainTimeoutSeconds: 20,
        networks: ["127.0.0.0/8"],
      }),
    });
    await lb.waitForLog((r) => r.msg === "following the fleet's web nodes", "the balancer to follow the fleet", 20_000);
    for (const id of ["web-1", "web-2"]) {
      const root = join(fleet.dir, "www", id, "demo");
      const nginx = await Nginx.start(join(fleet.dir, "nginx", id), join(root, "current"));
      nginxes.push(nginx);
      const apps = { demo: { root, repos: [repo.dir], health: { url: `${nginx.url}/.bosun-release`, marker: true, attempts: 2, timeoutSeconds: 2 }, keep: 2, graceSeconds: 0 } };
      await fleet.startAgent(id, ["web"], { BOSUN_APPS: JSON.stringify(apps), BOSUN_WEB: JSON.stringify({ advertise: { host: "127.0.0.1", port: nginx.port } }) });
    }
    await fleet.waitForNodes(["web-1", "web-2", "lb-1"]);
    firstCommit = await commitRelease("first");
    assert.equal((await release("ci")).code, 0);
    await until(async () => {
      const servers = await runtime.servers("web");
      return servers.length === 2 && servers.every((s) => s.status === "UP") ? true : undefined;
    }, "both web nodes up behind HAProxy", 30_000);
  });

  after(async () => {
    await fleet?.close();
    await Promise.all(nginxes.map((n) => n.stop()));
  });

  it("a key that may release but not drain stops before any node is taken out or swapped", async () => {
    await commitRelease("not drained");
    const out = await release("ci", "--drain");
    assert.equal(out.code, 1, out.text);
    assert.deepEqual(out.result.active, []);
    assert.match(out.result.failed.map((f) => `${f.phase} ${f.detail}`).join("; "), /^drain lb-1: not-allowed: key "ci" may not send command "lb-drain"/);
    assert.ok((await runtime.servers("web")).every((s) => s.status === "UP"), "both still in rotation");
    // The stopped rollout leaves the release desired before it, so a node that boots now does not sync to it.
    const releases = await fleet.bosun(["releases", "--app", "demo", "--json"]);
    assert.equal((JSON.parse(releases.stdout) as { desired?: { commit: string } }).desired?.commit, firstCommit);
  });

  it("a decommissioned web node's agent waits until the balancer has drained and removed it before it exits, so its server can stop with it", async () => {
    const root = join(fleet.dir, "www", "web-3", "demo");
    const nginx = await Nginx.start(join(fleet.dir, "nginx", "web-3"), join(root, "current"));
    nginxes.push(nginx);
    const apps = { demo: { root, repos: [repo.dir], health: { url: `${nginx.url}/.bosun-release`, marker: true, attempts: 2, timeoutSeconds: 2 }, keep: 2, graceSeconds: 0 } };
    const agent = await fleet.startAgent("web-3", ["web"], { BOSUN_APPS: JSON.stringify(apps), BOSUN_WEB: JSON.stringify({ advertise: { host: "127.0.0.1", port: nginx.port }, leaveTimeoutSeconds: 60 }) });
    await until(async () => ((await runtime.servers("web")).find((s) => s.name === "web-3")?.status === "UP" ? true : undefined), "web-3 up behind HAProxy", 30_000);
    // The fleet record lists lb-1 as up (web-3 reads it to know whom to wait for).
    await fleet.waitForNodes(["web-3", "lb-1"]);
    const load = loadGenerator(`http://127.0.0.1:${listenPort}/`, () => pages, 4);
    try {
      await fleet.publish(fleet.command("decommission", { reason: "scale in" }, { nodes: ["web-3"] }));
      assert.equal((await agent.exited).code, 0);
      // Out of the balancer by the time its agent has gone: the node's server may stop now.
      assert.deepEqual((await runtime.servers("web")).map((s) => s.name).filter((n) => n === "web-3"), [], "lb-1 no longer sends web-3 anything when its agent exits");
      await nginx.stop();
    } finally {
      await load.stop();
    }
    assert.ok(agent.logs.items.some((r) => r.msg === "the balancers drained this node"), "the agent waited for lb-1's word");
    const word = await fleet.clients.s3.send(new GetObjectCommand({ Bucket: `b-${fleet.cluster}`, Key: `state/drains/web-3/lb-1.json` }));
    assert.equal((JSON.parse(await word.Body!.transformToString()) as { drained: boolean }).drained, true);
    assert.equal(load.stats.failed, 0, `failed requests: ${load.stats.errors.join("; ")}`);
  });

  it("drains each node on the balancer before it swaps and puts it back after, one at a time, and no request fails", async () => {
    await commitRelease("second");
    const since = Date.now() - 1000;
    const load = loadGenerator(`http://127.0.0.1:${listenPort}/`, () => pages, 4);
    let out;
    try {
      out = await release("oncall", "--drain");
    } finally {
      await load.stop();
    }
    assert.equal(out.code, 0, out.text);
    const result = out.result;
    assert.deepEqual([...result.active].sort(), ["web-1", "web-2"]);
    assert.equal(result.ok, true);
    assert.ok(load.stats.requests > 20, `load ran: ${load.stats.requests}`);
    assert.equal(load.stats.failed, 0, `failed requests: ${load.stats.errors.join("; ")}`);
    assert.equal(load.stats.mixed, 0);

    // The order of what happened, from the events: lb-1 drains a node, the node swaps, lb-1 enables it; then the next node.
    const done = fleet.events.items.filter((e) => e.type === "done" && Date.parse(e.issuedAt) >= since) as (Envelope & { payload: { node: { id: string }; commandType: string; result: { node?: string } } })[];
    const steps = done
      .filter((e) => ["lb-drain", "lb-enable", "activate"].includes(e.payload.commandType))
      .sort((a, b) => Date.parse(a.issuedAt) - Date.parse(b.issuedAt))
      .map((e) => (e.payload.commandType === "activate" ? `activate ${e.payload.node.id}` : `${e.payload.commandType} ${e.payload.result.node}`));
    const first = steps[0]?.split(" ")[1];
    const second = first === "web-1" ? "web-2" : "web-1";
    assert.deepEqual(steps, [`lb-drain ${first}`, `activate ${first}`, `lb-enable ${first}`, `lb-drain ${second}`, `activate ${second}`, `lb-enable ${second}`]);
    const servers = await runtime.servers("web");
    assert.deepEqual(servers.map((s) => s.name).sort(), ["web-1", "web-2"]);
  });
});
