import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { IncomingMessage, ServerResponse } from "node:http";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Envelope } from "@bosun/core";
import { StateStore, claimElasticIp, createAwsClients, describeElasticIp, destroyAwsClients } from "@bosun/aws";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";
import { Moto, MotoAccount, motoMissing } from "./helpers/moto.ts";
import { needs } from "./helpers/tools.ts";
import { until } from "./helpers/until.ts";
import { LocalServer, freePort } from "./helpers/web.ts";
import { balancerSettings, killBalancer } from "./helpers/balancer.ts";

const tools = needs({ haproxy: "haproxy" });
const missing = motoMissing();
if (missing) it("needs moto_server", () => assert.fail(missing));

/** Checks are every 400 ms and three failures in a row make a takeover: small, with margins a loaded 2-core machine keeps. */
const INTERVAL_MS = 400;
const FAILURES = 3;
/** The most a takeover may take from the active's death: the failed checks, one more round for the claim, and slack for a loaded machine. */
const TAKEOVER_WITHIN_MS = INTERVAL_MS * (FAILURES + 2) + 3000;

/** Stands between one balancer and the other's HAProxy, so a test can make checks fail while the other is fine. */
class CheckPath extends LocalServer {
  failNext = 0;
  failed = 0;
  passed = 0;
  readonly #target: () => string;

  constructor(target: () => string) {
    super();
    this.#target = target;
  }

  protected handle(request: IncomingMessage, response: ServerResponse): void {
    if (this.failNext > 0) {
      this.failNext -= 1;
      this.failed += 1;
      // Lost on the way: the connection drops, as with a network fault between the two.
      return void request.socket.destroy();
    }
    fetch(this.#target(), { signal: AbortSignal.timeout(1000) }).then(
      (r) => {
        if (r.ok) this.passed += 1;
        response.statusCode = r.status;
        response.end();
      },
      () => {
        response.statusCode = 502;
        response.end();
      },
    );
  }
}

/** Starts one balancer of a pair: its HAProxy listening on `node.port`, checking the other balancer at `peerPort`. */
async function startPairMember(fleet: TestFleet, node: { id: string; port: number; dir: string }, peerPort: number, entry: Record<string, unknown>, env: Record<string, string>): Promise<TestProcess> {
  return fleet.startAgent(node.id, ["balancer"], {
    ...env,
    BOSUN_BALANCER: balancerSettings(node.dir, node.port, {
      pollSeconds: 0.5,
      pair: { peer: `http://127.0.0.1:${peerPort}/.bosun-lb`, intervalMs: INTERVAL_MS, timeoutMs: 300, failures: FAILURES, entry },
    }),
  });
}

describe("a pair of balancers holds one Elastic IP (EC2 on moto, real HAProxy)", { skip: tools.skip || missing || false }, () => {
  let moto: Moto;
  let account: MotoAccount;
  let fleet: TestFleet;
  let allocationId: string;
  const nodes: Record<"a" | "b", { id: string; port: number; dir: string; check: CheckPath; proc?: TestProcess }> = {} as never;

  const start = async (name: "a" | "b") => {
    const node = nodes[name];
    node.proc = await startPairMember(fleet, node, nodes[name === "a" ? "b" : "a"].check.port, { kind: "eip", allocationId }, { AWS_ENDPOINT_URL_EC2: moto.endpoint });
    return node.proc;
  };
  const holder = () => account.holder(allocationId);
  const takeovers = () => fleet.events.items.filter((e) => e.type === "lb-takeover") as (Envelope & { payload: { node: { id: string }; reason: string; previous?: string; tookMs?: number; failedChecks: number } })[];

  const kill = (name: "a" | "b") => killBalancer(nodes[name].proc!, nodes[name].dir);

  before(async () => {
    moto = await Moto.start();
    account = new MotoAccount(moto.endpoint);
    const { subnetId } = await account.network();
    const [a, b] = await account.instances(subnetId, 2);
    ({ allocationId } = await account.elasticIp());
    fleet = await TestFleet.start({ lostAfterSeconds: 600, heartbeatSeconds: 1 });
    for (const [name, id] of [["a", a!], ["b", b!]] as const) {
      const port = await freePort();
      nodes[name] = { id, port, dir: join(fleet.dir, `haproxy-${name}`), check: await new CheckPath(() => `http://127.0.0.1:${port}/.bosun-lb`).start() };
    }
    // a first, so it is the one that finds the address unheld and takes it.
    const first = await start("a");
    await first.waitForLog((r) => r.msg === "took over the entry point: active", "a to take the unheld address", 30_000);
    assert.equal(await holder(), nodes.a.id);
    const second = await start("b");
    await second.waitForLog((r) => /standby/.test(String(r.msg)), "b to stand by", 30_000);
  });

  after(async () => {
    await fleet?.close();
    for (const node of Object.values(nodes)) await node.check.close();
    account?.close();
    await moto?.stop();
    // Every HAProxy this file started is gone (the agents stop theirs; killed ones were killed with their agent).
    for (const node of Object.values(nodes)) {
      const pid = Number.parseInt(await readFile(join(node.dir, "haproxy.pid"), "utf8").catch(() => ""), 10);
      if (pid > 0 && existsSync(`/proc/${pid}`)) {
        process.kill(pid, "SIGKILL");
        assert.fail(`haproxy ${pid} outlived its agent`);
      }
    }
  });

  it("a takeover is a compare-and-swap on the address's association: of two balancers racing from what they both saw, one wins", async () => {
    const spare = await account.elasticIp();
    const clients = createAwsClients({ endpoint: moto.endpoint, region: "us-east-1" });
    try {
      const claim = (instanceId: string, from?: string) => claimElasticIp(clients, { allocationId: spare.allocationId, instanceId, from });
      // Nobody holds it: both claim at once, one association wins.
      const first = await Promise.all([claim(nodes.a.id), claim(nodes.b.id)]);
      assert.deepEqual(first.filter(Boolean).length, 1, `both claims: ${first.join(", ")}`);
      const seen = await describeElasticIp(clients, spare.allocationId);
      const loser = seen.instanceId === nodes.a.id ? nodes.b.id : nodes.a.id;
      // Both take over from the association they saw: the first undoes it, the second finds it gone.
      const second = await Promise.all([claim(loser, seen.associationId), claim(seen.instanceId!, seen.associationId)]);
      assert.deepEqual(second.filter(Boolean).length, 1, `both takeovers: ${second.join(", ")}`);
      const now = await describeElasticIp(clients, spare.allocationId);
      assert.ok(now.instanceId && now.associationId !== seen.associationId);
    } finally {
      destroyAwsClients(clients);
    }
  });

  it("checks that fail fewer times in a row than the threshold, while the active is fine, move nothing", async () => {
    const { check } = nodes.a;
    check.failNext = FAILURES - 1;
    await until(async () => (check.failed >= FAILURES - 1 ? true : undefined), "the standby's checks to fail");
    const passedAfter = check.passed;
    // The standby checks again and again after the failures: a takeover would have come by now.
    await until(async () => (check.passed >= passedAfter + FAILURES + 1 ? true : undefined), "the standby's checks to pass again", 20_000);
    await nodes.b.proc!.waitForLog((r) => r.msg === "the other balancer answers again" && r["failedChecks"] === FAILURES - 1, "b to see a answer again");
    assert.equal(await holder(), nodes.a.id);
    assert.equal(takeovers().filter((e) => e.payload.node.id === nodes.b.id).length, 0);
  });

  it("when the active dies, the standby holds the Elastic IP within the configured time, and says so", async () => {
    const began = Date.now();
    await kill("a");
    const held = await until(async () => ((await holder()) === nodes.b.id ? Date.now() - began : undefined), "b to hold the address", TAKEOVER_WITHIN_MS, 50);
    assert.ok(held <= TAKEOVER_WITHIN_MS, `took ${held} ms`);
    const event = await fleet.waitForEvent((e) => e.type === "lb-takeover" && (e.payload as { node: { id: string } }).node.id === nodes.b.id, "b's takeover event");
    const payload = event.payload as { reason: string; previous: string; failedChecks: number; threshold: number; intervalMs: number };
    assert.deepEqual({ reason: payload.reason, previous: payload.previous, failedChecks: payload.failedChecks, threshold: payload.threshold, intervalMs: payload.intervalMs }, {
      reason: "peer-failed",
      previous: nodes.a.id,
      failedChecks: FAILURES,
      threshold: FAILURES,
      intervalMs: INTERVAL_MS,
    });
  });

  it("a recovered former active stays standby and does not take the address back", async () => {
    if ((await holder()) !== nodes.b.id) {
      // Run alone: make b the holder the way the previous test does.
      await kill("a");
      await until(async () => ((await holder()) === nodes.b.id ? true : undefined), "b to hold the address", TAKEOVER_WITHIN_MS);
    }
    const before = takeovers().length;
    const back = await start("a");
    await back.waitForLog((r) => r.msg === "another balancer holds the entry point, or nobody: standby" && r["holder"] === nodes.b.id, "a to come back as standby", 20_000);
    // a checks b through b's check path: once it has passed more checks than a takeover needs, a grab-back would have happened.
    const passed = nodes.b.check.passed;
    await until(async () => (nodes.b.check.passed >= passed + FAILURES + 2 ? true : undefined), "a to check b several times", 20_000);
    assert.equal(await holder(), nodes.b.id);
    assert.equal(takeovers().length, before, "no takeover since a came back");

    // bosun lb status says which one is active.
    const coordinator = await fleet.startCoordinator();
    try {
      const status = await until(async () => {
        const out = await fleet.bosun(["lb", "status", "--json"]);
        const lbs = (JSON.parse(out.stdout) as { balancers: { node: string; report?: { pair?: { role: string; holder?: string } } }[] }).balancers;
        const roles = Object.fromEntries(lbs.map((b) => [b.node, b.report?.pair?.role]));
        return roles[nodes.a.id] === "standby" && roles[nodes.b.id] === "active" ? lbs : undefined;
      }, "bosun lb status to show b active and a standby");
      assert.equal(status.find((b) => b.node === nodes.a.id)?.report?.pair?.holder, nodes.b.id);
      const text = await fleet.bosun(["lb", "status"]);
      assert.match(text.stdout, new RegExp(`ACTIVE for eip ${allocationId} \\(\\S+\\), held by ${nodes.b.id}`));
    } finally {
      await coordinator.stop(15_000);
    }
  });
});

describe("a pair of balancers holds one Route 53 record under an S3 lease (Route 53 and S3 on moto, real HAProxy)", { skip: tools.skip || missing || false }, () => {
  let moto: Moto;
  let account: MotoAccount;
  let fleet: TestFleet;
  let zoneId: string;
  const name = "www.bosun-test.example";
  const nodes: Record<"a" | "b", { id: string; address: string; port: number; dir: string; proc?: TestProcess }> = {} as never;

  const start = async (which: "a" | "b") => {
    const node = nodes[which];
    const entry = { kind: "route53", hostedZoneId: zoneId, name, address: node.address, ttlSeconds: 5 };
    node.proc = await startPairMember(fleet, node, nodes[which === "a" ? "b" : "a"].port, entry, { AWS_ENDPOINT_URL_ROUTE_53: moto.endpoint });
    return node.proc;
  };

  before(async () => {
    moto = await Moto.start();
    account = new MotoAccount(moto.endpoint);
    zoneId = await account.hostedZone("bosun-test.example");
    // The lease needs an S3 that enforces conditional writes, as AWS does: moto's.
    fleet = await TestFleet.start({ lostAfterSeconds: 600 }, { s3Endpoint: moto.endpoint });
    for (const [which, address] of [["a", "203.0.113.11"], ["b", "203.0.113.12"]] as const) {
      nodes[which] = { id: `lb-${which}`, address, port: await freePort(), dir: join(fleet.dir, `haproxy-dns-${which}`) };
    }
  });

  after(async () => {
    await fleet?.close();
    account?.close();
    await moto?.stop();
  });

  it("the record points at the active; when it dies the standby takes the lease and points the record at itself in time; the recovered one stays standby", async () => {
    await (await start("a")).waitForLog((r) => r.msg === "took over the entry point: active", "a to take the unheld record", 30_000);
    assert.deepEqual(await account.aRecord(zoneId, name), [nodes.a.address]);
    await (await start("b")).waitForLog((r) => /standby/.test(String(r.msg)), "b to stand by", 30_000);

    const began = Date.now();
    await killBalancer(nodes.a.proc!, nodes.a.dir);
    // The lease lasts interval × (failures + 1) unrenewed; the standby's failed checks run meanwhile.
    const within = INTERVAL_MS * (FAILURES + 1) + TAKEOVER_WITHIN_MS;
    await until(async () => ((await account.aRecord(zoneId, name))[0] === nodes.b.address ? true : undefined), "the record to point at b", within, 50);
    assert.ok(Date.now() - began <= within);
    const event = await fleet.waitForEvent((e) => e.type === "lb-takeover" && (e.payload as { node: { id: string } }).node.id === nodes.b.id, "b's takeover event");
    assert.deepEqual({ reason: (event.payload as { reason: string }).reason, previous: (event.payload as { previous?: string }).previous }, { reason: "peer-failed", previous: nodes.a.id });

    // a comes back: the lease is b's and renewed, so a stays standby and never writes the record.
    const back = await start("a");
    await back.waitForLog((r) => r.msg === "another balancer holds the entry point, or nobody: standby" && r["holder"] === nodes.b.id, "a to come back as standby", 20_000);
    // Each renewal of b's lease is a round, in which a checks b too: past the threshold, a grab-back would have happened.
    const store = new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` });
    const renewals = new Set<string>();
    await until(async () => {
      const lease = await store.get<{ holder: string; expiresAt: string }>(`state/leases/lb-${name}.json`);
      assert.equal(lease?.holder, nodes.b.id);
      renewals.add(lease.expiresAt);
      return renewals.size > FAILURES + 2 ? true : undefined;
    }, "b to renew its lease several times", 20_000, 50);
    assert.deepEqual(await account.aRecord(zoneId, name), [nodes.b.address]);
    assert.equal(fleet.events.items.filter((e) => e.type === "lb-takeover" && (e.payload as { node: { id: string } }).node.id === nodes.a.id && Date.parse(e.issuedAt) > began).length, 0);
  });
});
