import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { EventVerifier, NodeKeyDirectory, StateStore, ensureBucket, queuesByPrefix, names, routingAttributes, signRecord, sweepWatchQueues, stateKeys } from "@bosun/aws";
import { NodeKeyring } from "@bosun/agent";
import { CommandFollower, type Issuer } from "@bosun/coordinator";
import { createMessage, nodeIssuer, privateKeyFromPem, type DesiredRelease, type Envelope, type Signer } from "@bosun/core";
import { TestFleet } from "./helpers/fleet.ts";
import { SiteRepo } from "./helpers/web.ts";
import { needs } from "./helpers/tools.ts";

const tools = needs({ git: "git" });

/** A node's key made as an agent makes it, in a state directory of the test's, and registered. */
async function nodeKey(fleet: TestFleet, nodeId: string): Promise<Signer> {
  const ring = await NodeKeyring.open(await mkdtemp(join(fleet.dir, `keys-${nodeId}-`)));
  await ring.register(new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` }), fleet.topicArn, nodeId);
  return ring.signer(nodeId);
}

/** An event as a node signs it: about `about`, signed by `signer`, named as coming from `issuer`. */
function eventFrom(signer: Signer, about: string, options: { issuer?: string; correlationId?: string; type?: "heartbeat" | "done" } = {}): Envelope {
  const payload =
    options.type === "done"
      ? { node: { id: about, roles: ["web"] }, commandType: "probe", durationMs: 1, result: {} }
      : { node: { id: about, roles: ["web"] }, inFlight: 0, uptimeSeconds: 1, report: {} };
  return createMessage({ ...signer, keyId: options.issuer ?? signer.keyId }, { kind: "event", type: options.type ?? "heartbeat", payload, ttlSeconds: 300, correlationId: options.correlationId });
}

describe("signed state records", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let repo: SiteRepo;
  let commit: string;
  const record = stateKeys.release("demo");
  const apps = (root: string) => ({ BOSUN_APPS: JSON.stringify({ demo: { root, repos: [repo.dir] } }) });
  const desired = (): DesiredRelease => ({ app: "demo", repo: repo.dir, commit, ref: "main", sequence: Date.now(), publishedAt: new Date().toISOString(), issuer: "ci" });

  before(async () => {
    fleet = await TestFleet.start();
    repo = await SiteRepo.create(join(fleet.dir, "site"));
    commit = await repo.commit({ "index.html": "signed\n" });
  });
  after(() => fleet.close());

  /** Runs a boot sync for a new node; returns its exit code, output and the node's deploy root. */
  async function syncNode(node: string) {
    const root = join(fleet.dir, "www", node, "demo");
    const out = await fleet.bosun(["agent", "--sync-once", "--node-id", node, "--role", "web", "--retry-for", "0"], { BOSUN_STATE_DIR: fleet.stateDir(node), ...apps(root) });
    return { ...out, root };
  }

  const bad: [string, () => unknown, string][] = [
    ["written by a key nobody trusts", () => signRecord(fleet.signers.get("rogue")!, "desired-release", desired()), "unknown-key"],
    ["written by a trusted key that may not release", () => signRecord(fleet.signers.get("prober")!, "desired-release", desired()), "not-allowed"],
    ["edited after signing", () => ({ ...signRecord(fleet.signers.get("ci")!, "desired-release", desired()), payload: { ...desired(), commit: "f".repeat(40) } }), "bad-signature"],
    ["not signed at all (a plain record)", () => desired(), "unsigned"],
  ];
  for (const [what, make, reason] of bad) {
    it(`a desired release ${what} is refused, reported naming the record, and never acted on`, async () => {
      await fleet.putObject(record, make());
      const node = `web-${reason}`;
      const sync = await syncNode(node);
      assert.equal(sync.code, 1, sync.stderr);
      assert.match(sync.stderr, /the desired release record was refused/);
      const refused = await fleet.waitForEvent(
        (e) => e.type === "refused" && (e.payload as { record?: string; node: { id: string } }).record === record && (e.payload as { node: { id: string } }).node.id === node,
        `a refused event from ${node} naming the record`,
      );
      assert.equal((refused.payload as { reason: string }).reason, reason);
      await assert.rejects(readlink(join(sync.root, "current")), "nothing was deployed");
    });
  }

  it("a boot sync keeps trying while S3 is not there yet, then brings the node to its release", async () => {
    // A bucket that does not exist yet, as S3 can look to a node whose network is still coming up.
    const bucket = `late-${fleet.cluster}`;
    const root = join(fleet.dir, "www", "web-late-s3", "demo");
    const sync = fleet.bosun(["agent", "--sync-once", "--node-id", "web-late-s3", "--role", "web", "--retry-for", "60"], {
      BOSUN_STATE_DIR: fleet.stateDir("web-late-s3"),
      BOSUN_BUCKET: bucket,
      ...apps(root),
    });
    await new Promise((r) => setTimeout(r, 1500));
    await ensureBucket(fleet.clients, bucket);
    await new StateStore({ clients: fleet.clients }, { bucket }).put(record, signRecord(fleet.signers.get("ci")!, "desired-release", desired()));
    const out = await sync;
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /boot-time sync failed; trying again/);
    assert.equal((await readlink(join(root, "current"))).split("/").pop(), commit);
  });

  it("a running agent refuses a bad record once subscribed, and deploys a good one at boot", async () => {
    await fleet.putObject(record, signRecord(fleet.signers.get("rogue")!, "desired-release", desired()));
    const root = join(fleet.dir, "www", "web-running", "demo");
    const agent = await fleet.startAgent("web-running", ["web"], apps(root));
    await fleet.waitForEvent((e) => e.type === "refused" && (e.payload as { node: { id: string } }).node.id === "web-running", "the agent's refusal");
    await assert.rejects(readlink(join(root, "current")));
    await agent.stop();

    await fleet.putObject(record, signRecord(fleet.signers.get("ci")!, "desired-release", desired()));
    const good = await syncNode("web-good");
    assert.equal(good.code, 0, good.stderr);
    assert.equal((await readlink(join(good.root, "current"))).split("/").pop(), commit);
  });
});

describe("events name their true sender", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let web1: Signer;
  let web2: Signer;
  before(async () => {
    fleet = await TestFleet.start();
    web1 = await nodeKey(fleet, "web-1");
    web2 = await nodeKey(fleet, "web-2");
  });
  after(() => fleet.close());

  const verdict = async (envelope: Envelope) => {
    const result = await fleet.verifier.verify(JSON.stringify(envelope));
    return result.ok ? "ok" : result.error.reason;
  };

  it("a node's event is believed when signed by its own registered key, and only then", async () => {
    assert.equal(await verdict(eventFrom(web1, "web-1")), "ok");
    // web-2's key naming itself, speaking about web-1.
    assert.equal(await verdict(eventFrom(web2, "web-1")), "wrong-sender");
    // web-2's key claiming to be web-1.
    assert.equal(await verdict(eventFrom(web2, "web-1", { issuer: nodeIssuer("web-1") })), "bad-signature");
    // A node that registered no key at all.
    const stranger = await nodeKey(fleet, "web-3");
    assert.equal(await verdict(eventFrom(stranger, "web-9", { issuer: nodeIssuer("web-9") })), "unknown-key");
  });

  it("the coordinator refuses an event about one node signed by another's key, and its fleet is unchanged", async () => {
    await fleet.startCoordinator();
    const forged = eventFrom(web2, "web-1");
    await fleet.publish(forged);
    const coordinator = fleet.processes.find((p) => p.name === "coordinator")!;
    const line = await coordinator.waitForLog((r) => r["messageId"] === forged.id, "the coordinator's refusal");
    assert.equal(line["reason"], "wrong-sender");
    // A genuine event is taken: the fleet lists web-2, never web-1.
    await fleet.publish(eventFrom(web2, "web-2"));
    await fleet.waitForNodes(["web-2"]);
    const listed = JSON.parse((await fleet.bosun(["nodes", "--json"])).stdout) as { id: string }[];
    assert.deepEqual(listed.map((n) => n.id), ["web-2"]);
  });

  it("a node's key is rotated without a moment in which its events are not believed", async () => {
    await fleet.startAgent("web-r", ["web"]);
    const ring = JSON.parse(await readFile(join(fleet.stateDir("web-r"), "node-keys.json"), "utf8")) as { keys: { privateKeyPem: string }[] };
    const old: Signer = { keyId: nodeIssuer("web-r"), privateKey: privateKeyFromPem(ring.keys[0]!.privateKeyPem) };
    assert.equal(await verdict(eventFrom(old, "web-r")), "ok");

    const rotate = fleet.command("rotate-key", { step: "rotate" }, { nodes: ["web-r"] });
    await fleet.publish(rotate);
    // The result is signed with the new key, and believed.
    await fleet.waitForNodeEvent(rotate.id, "web-r", "done");
    assert.equal(await verdict(eventFrom(old, "web-r")), "ok", "the old key is still believed while both are registered");

    const retire = fleet.command("rotate-key", { step: "retire" }, { nodes: ["web-r"] });
    await fleet.publish(retire);
    await fleet.waitForNodeEvent(retire.id, "web-r", "done");
    // A verifier that has not cached the keys (a new CLI, a restarted coordinator) no longer believes
    // it; one that had cached them believes it for at most its cache time (a minute).
    const fresh = new EventVerifier({ trust: fleet.trust, keys: new NodeKeyDirectory({ store: new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` }) }, { topicArn: fleet.topicArn }) }, { maxBytes: 65536 });
    const after = await fresh.verify(JSON.stringify(eventFrom(old, "web-r")));
    assert.equal(after.ok ? "ok" : after.error.reason, "bad-signature", "the retired key is no longer believed");
  });
});

describe("a waiting issuer cannot miss an answer nor take another's", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let ghost: Signer;
  let issuer: Issuer;
  before(async () => {
    fleet = await TestFleet.start();
    ghost = await nodeKey(fleet, "ghost-1");
    issuer = {
      settings: { cluster: fleet.cluster, bucket: `b-${fleet.cluster}`, maxMessageBytes: 65536 } as Issuer["settings"],
      clients: fleet.clients,
      trust: () => fleet.trust,
      signer: () => fleet.signers.get("oncall")!,
      topicArn: async () => fleet.topicArn,
      verifier: async () => fleet.verifier,
    };
  });
  after(() => fleet.close());

  it("a done for another command that reaches the waiting queue is not counted", async () => {
    const commandId = randomUUID();
    const follower = await CommandFollower.open(issuer, commandId, { timeoutMs: 3000 });
    // Signed by the real node, about another command, but routed (attributes are not signed) to this one's queue.
    const other = eventFrom(ghost, "ghost-1", { type: "done", correlationId: randomUUID() });
    await fleet.publishRaw(JSON.stringify(other), { ...routingAttributes(other), correlation: commandId });
    const result = await follower.wait(["ghost-1"], 3000);
    assert.deepEqual(result.missing, ["ghost-1"]);
    assert.equal(result.ok, false);
  });

  it("an answer the bus never delivers is found where the node keeps it in S3", async () => {
    const commandId = randomUUID();
    const follower = await CommandFollower.open(issuer, commandId, { timeoutMs: 20_000 });
    const done = eventFrom(ghost, "ghost-1", { type: "done", correlationId: commandId });
    await fleet.putObject(stateKeys.result(commandId, "ghost-1"), done);
    const result = await follower.wait(["ghost-1"], 20_000);
    assert.equal(result.ok, true);
    assert.deepEqual(result.nodes.map((n) => `${n.node}:${n.state}`), ["ghost-1:done"]);
  });

  it("a CLI killed while it waits leaves a queue that the sweep removes once its time has passed", async () => {
    const prefix = names.watchQueue(fleet.cluster, "");
    const before = new Set((await queuesByPrefix(fleet.clients, prefix)).map((q) => q.name));
    const cli = fleet.spawn("waiting-cli", ["send", "probe", "--target", "node:ghost-9", "--wait", "--timeout", "60"]);
    let left: string | undefined;
    for (let i = 0; i < 100 && !left; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = (await queuesByPrefix(fleet.clients, prefix)).map((q) => q.name).find((n) => !before.has(n) && !n.endsWith("-dlq"));
    }
    assert.ok(left, "the waiting CLI made a watch queue");
    cli.child.kill("SIGKILL");
    await cli.exited;
    const sweep = (now: Date) => sweepWatchQueues(fleet.clients, { cluster: fleet.cluster, topicArn: fleet.topicArn, now });
    assert.deepEqual(await sweep(new Date()), [], "a queue whose time has not passed stays");
    // The CLI wanted its queue for its timeout and ten minutes more; a quarter of an hour later it is removed.
    assert.deepEqual(await sweep(new Date(Date.now() + 15 * 60_000)), [left], "past its time it is removed");
    assert.ok(!(await queuesByPrefix(fleet.clients, prefix)).some((q) => q.name === left || q.name === `${left}-dlq`));
  });
});

