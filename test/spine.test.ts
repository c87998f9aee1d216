import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GetQueueAttributesCommand, GetQueueUrlCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { routingAttributes } from "@bosun/aws";
import type { Envelope } from "@bosun/core";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";

async function probeLog(fleet: TestFleet, nodeId: string): Promise<string[]> {
  try {
    return (await readFile(join(fleet.stateDir(nodeId), "probe.log"), "utf8")).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

const countInLog = (lines: string[], id: string) => lines.filter((l) => l.startsWith(`${id} `)).length;

async function queueDepth(fleet: TestFleet, queueName: string): Promise<number> {
  const { QueueUrl } = await fleet.clients.sqs.send(new GetQueueUrlCommand({ QueueName: queueName }));
  const { Attributes } = await fleet.clients.sqs.send(
    new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"] }),
  );
  return Number(Attributes?.["ApproximateNumberOfMessages"] ?? 0) + Number(Attributes?.["ApproximateNumberOfMessagesNotVisible"] ?? 0);
}

/**
 * Waits until a dead-letter queue holds a message matching `match` (the agent moves a refused
 * message there just after it reports the refusal) and returns it with the reason Bosun attached.
 * Messages looked at are hidden for a minute, so each test finds only what is new.
 */
async function waitForDeadLetter(fleet: TestFleet, queueName: string, match: (letter: { body: string }) => boolean, timeoutMs = 15_000): Promise<{ body: string; reason: string }> {
  const { QueueUrl } = await fleet.clients.sqs.send(new GetQueueUrlCommand({ QueueName: `${queueName}-dlq` }));
  const seen: { body: string; reason: string }[] = [];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const out = await fleet.clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 60, MessageAttributeNames: ["All"] }),
    );
    for (const m of out.Messages ?? []) seen.push({ body: m.Body ?? "", reason: m.MessageAttributes?.["bosun.reason"]?.StringValue ?? "" });
    const found = seen.find(match);
    if (found) return found;
  }
  throw new Error(`nothing matching arrived in ${queueName}-dlq; saw ${seen.map((l) => l.reason).join(", ") || "nothing"}`);
}

describe("commands reach exactly their targets", () => {
  let fleet: TestFleet;
  before(async () => {
    fleet = await TestFleet.start();
    await fleet.startCoordinator();
    await Promise.all([fleet.startAgent("web-1", ["web"]), fleet.startAgent("web-2", ["web"]), fleet.startAgent("lb-1", ["balancer"])]);
    // `--wait` expects the nodes the coordinator knows.
    await fleet.waitForNodes(["web-1", "web-2", "lb-1"]);
  });
  after(() => fleet.close());

  it("a command for the web role reaches every web agent and no other", async () => {
    const command = fleet.command("probe", {}, { roles: ["web"] });
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, "web-1", "done");
    await fleet.waitForNodeEvent(command.id, "web-2", "done");
    assert.equal(countInLog(await probeLog(fleet, "web-1"), command.id), 1);
    assert.equal(countInLog(await probeLog(fleet, "web-2"), command.id), 1);
    // SNS fans out at publish time, so anything for lb-1 would be in its queue, its dead-letter
    // queue (where a wrong target goes) or its log by now.
    assert.equal(await queueDepth(fleet, fleet.nodeQueueName("lb-1")), 0);
    assert.equal(await queueDepth(fleet, `${fleet.nodeQueueName("lb-1")}-dlq`), 0);
    assert.equal(countInLog(await probeLog(fleet, "lb-1"), command.id), 0);
    assert.deepEqual(
      fleet.eventsFor(command.id).map((e) => (e.payload as { node: { id: string } }).node.id).filter((id) => id === "lb-1"),
      [],
    );
  });

  it("a command for one node id reaches that node alone", async () => {
    const command = fleet.command("probe", {}, { nodes: ["web-2"] });
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, "web-2", "done");
    assert.equal(countInLog(await probeLog(fleet, "web-1"), command.id), 0);
    for (const other of ["web-1", "lb-1"]) {
      assert.equal(await queueDepth(fleet, fleet.nodeQueueName(other)), 0);
      assert.equal(await queueDepth(fleet, `${fleet.nodeQueueName(other)}-dlq`), 0, `${other} dead-lettered nothing`);
    }
  });

  it("`bosun send --wait` shows every target's result and exits 0", async () => {
    const { code, stdout } = await fleet.bosun(["send", "probe", "--target", "role:web", "--wait", "--timeout", "20", "--json"]);
    assert.equal(code, 0);
    const result = JSON.parse(stdout) as { result: { nodes: { node: string; state: string }[]; ok: boolean } };
    assert.deepEqual(result.result.nodes.map((n) => `${n.node}:${n.state}`), ["web-1:done", "web-2:done"]);
  });

  it("`bosun send --wait` exits 1 and names a target node that did not answer", async () => {
    const { code, stdout } = await fleet.bosun(["send", "probe", "--target", "node:ghost-1", "--wait", "--timeout", "3"]);
    assert.equal(code, 1);
    assert.match(stdout, /No answer in time: ghost-1/);
  });
});

describe("bad input is refused, dead-lettered and survived", () => {
  let fleet: TestFleet;
  let agent: TestProcess;
  const node = "web-1";
  before(async () => {
    fleet = await TestFleet.start({ maxMessageBytes: 4096 });
    agent = await fleet.startAgent(node, ["web"]);
  });
  after(() => fleet.close());

  const target = { nodes: [node] };
  const attributes = (e: Envelope | Omit<Envelope, "sig">) => routingAttributes(e);
  const rawAttributes = { kind: "command", type: "probe", correlation: "raw", "to.node.web-1": "1" };

  /**
   * Publishes bad input (an envelope, or a raw body with the attributes of a probe for this node),
   * expects a refusal with `reason` (event, log line, and the message kept in the dead-letter
   * queue with that reason), then proves the agent still serves a good command.
   */
  async function expectRefused(reason: string, input: string | Envelope | Omit<Envelope, "sig">, messageId?: string): Promise<void> {
    const body = typeof input === "string" ? input : JSON.stringify(input);
    await fleet.publishRaw(body, typeof input === "string" ? rawAttributes : attributes(input));
    const refused = await fleet.waitForEvent(
      (e) => e.type === "refused" && (e.payload as { reason: string }).reason === reason && (!messageId || (e.payload as { messageId?: string }).messageId === messageId),
      `a refused event with reason ${reason}`,
    );
    assert.equal((refused.payload as { node: { id: string } }).node.id, node);
    await agent.waitForLog((r) => r["reason"] === reason && String(r.msg).startsWith("refused message"), `a log line for ${reason}`);
    const kept = await waitForDeadLetter(fleet, fleet.nodeQueueName(node), (letter) => letter.body === body);
    assert.equal(kept.reason, reason, "kept in the dead-letter queue, as it came, with the reason");
    const good = fleet.command("probe", {}, target);
    await fleet.publish(good);
    await fleet.waitForNodeEvent(good.id, node, "done");
    assert.equal(agent.child.exitCode, null, "the agent is still running");
  }

  it("malformed JSON", () => expectRefused("malformed-json", "{not json"));

  it("an oversized body", () => {
    const big = fleet.command("probe", { seconds: 0, note: "x".repeat(100) }, target);
    return expectRefused("oversized", JSON.stringify({ ...big, padding: "y".repeat(5000) }));
  });

  it("an unsigned command", () => {
    const { sig: _sig, ...unsigned } = fleet.command("probe", {}, target);
    return expectRefused("unsigned", unsigned);
  });

  it("a key the node does not trust", () => expectRefused("unknown-key", fleet.command("probe", {}, target, { key: "rogue" })));

  it("a trusted key sending a type it may not send", () => expectRefused("not-allowed", fleet.command("probe", {}, target, { key: "ci" })));

  it("a tampered command", () => {
    const signed = fleet.command("probe", { seconds: 0 }, target);
    return expectRefused("bad-signature", { ...signed, payload: { seconds: 1 } });
  });

  it("an expired command", () => expectRefused("expired", fleet.command("probe", {}, target, { ttlSeconds: 10, now: new Date(Date.now() - 3600_000) })));

  it("an unknown command type", () => expectRefused("unknown-type", fleet.command("format-disks", {}, target)));

  it("a payload that fails its schema", () => expectRefused("bad-payload", fleet.command("probe", { seconds: "ten" }, target)));

  it("a copy of a finished command (an SNS duplicate or a replay) has no effect and is settled quietly", async () => {
    const command = fleet.command("probe", {}, target);
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, node, "done");
    await fleet.publish(command);
    await agent.waitForLog((r) => String(r.msg).startsWith("a copy of a command already taken") && r["commandId"] === command.id, "the copy settled");
    assert.equal(countInLog(await probeLog(fleet, node), command.id), 1);
    assert.equal(fleet.eventsFor(command.id, "done").length, 1);
    // Not bad input: no refusal, and nothing kept in the dead-letter queue for a person to read.
    assert.equal(fleet.events.items.filter((e) => e.type === "refused" && (e.payload as { messageId?: string }).messageId === command.id).length, 0);
    await assert.rejects(
      waitForDeadLetter(fleet, fleet.nodeQueueName(node), (letter) => letter.body === JSON.stringify(command), 3000),
      /nothing matching arrived/,
    );
  });

  it("a forged command id in an unverifiable message neither names nor blocks the real command", async () => {
    const real = fleet.command("probe", {}, target);
    const { sig: _sig, ...unsigned } = { ...real, payload: { seconds: 0, note: "forged" } };
    await fleet.publishRaw(JSON.stringify(unsigned), attributes(unsigned));
    const refused = await fleet.waitForEvent((e) => e.type === "refused" && (e.payload as { messageId?: string }).messageId === real.id, "the forged copy refused");
    assert.equal((refused.payload as { verified: boolean }).verified, false);
    assert.notEqual(refused.correlationId, real.id);
    await fleet.publish(real);
    await fleet.waitForNodeEvent(real.id, node, "done");
  });
});

describe("exactly once under concurrent copies, with a real agent", () => {
  let fleet: TestFleet;
  before(async () => {
    fleet = await TestFleet.start({ concurrency: 8 });
  });
  after(() => fleet.close());

  it("copies waiting in the queue when the agent starts arrive in one batch and have their effect once", async () => {
    for (let trial = 0; trial < 3; trial++) {
      // A new node each trial, its queue made as its agent would make it: the copies wait there,
      // and the agent's first receive hands them out together.
      const node = `copies-${trial}`;
      await fleet.createNodeQueue(node, ["web"]);
      const commands = [0, 1].map((i) => fleet.command("probe", { note: `trial ${trial}.${i}` }, { nodes: [node] }));
      for (const command of commands) await Promise.all(Array.from({ length: 5 }, () => fleet.publish(command)));
      const agent = await fleet.startAgent(node, ["web"]);
      for (const command of commands) {
        await fleet.waitForNodeEvent(command.id, node, "done");
        await agent.waitForLog(
          () => agent.logs.items.filter((r) => String(r.msg).startsWith("a copy of a command already taken") && r["commandId"] === command.id).length === 4,
          `the other 4 copies of ${command.id} settled as copies`,
        );
        assert.equal(countInLog(await probeLog(fleet, node), command.id), 1, `trial ${trial}: the effect happened once`);
        assert.equal(fleet.eventsFor(command.id, "done").length, 1);
      }
      await agent.stop();
    }
  });
});

describe("long work, restarts and stops", () => {
  let fleet: TestFleet;
  before(async () => {
    fleet = await TestFleet.start({ visibilityTimeoutSeconds: 2 });
  });
  after(() => fleet.close());

  it("keeps a job longer than the visibility timeout invisible while it runs", async () => {
    const agent = await fleet.startAgent("slow-1", ["web"]);
    const command = fleet.command("probe", { seconds: 5 }, { nodes: ["slow-1"] });
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, "slow-1", "done", 20_000);
    assert.equal(fleet.eventsFor(command.id, "ack").length, 1);
    assert.equal((fleet.eventsFor(command.id, "ack")[0]!.payload as { receiveCount: number }).receiveCount, 1);
    assert.equal(agent.logs.items.filter((r) => String(r.msg).includes("redelivered")).length, 0);
    await agent.stop();
  });

  it("a command redelivered after the agent was SIGKILLed mid-job is resumed and has its effect once", async () => {
    const first = await fleet.startAgent("crash-1", ["web"]);
    const command = fleet.command("probe", { seconds: 3 }, { nodes: ["crash-1"] });
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, "crash-1", "ack");
    first.child.kill("SIGKILL");
    await first.exited;
    assert.equal(fleet.eventsFor(command.id, "done").length, 0);

    await fleet.startAgent("crash-1", ["web"]);
    const done = await fleet.waitForNodeEvent(command.id, "crash-1", "done", 30_000);
    const acks = fleet.eventsFor(command.id, "ack").map((e) => e.payload as { resumed: boolean; receiveCount: number });
    assert.deepEqual(acks.map((a) => a.resumed), [false, true]);
    assert.ok(done);
    assert.equal(countInLog(await probeLog(fleet, "crash-1"), command.id), 1);
    assert.equal(fleet.eventsFor(command.id, "done").length, 1);
  });

  /** Starts an agent, gives it a probe of `seconds`, sends SIGTERM once it is running, and checks it exits 0. */
  async function sigtermDuringProbe(node: string, seconds: number, deadlineSeconds: number): Promise<Envelope> {
    const agent = await fleet.startAgent(node, ["web"], { BOSUN_SHUTDOWN_DEADLINE: String(deadlineSeconds) });
    const command = fleet.command("probe", { seconds }, { nodes: [node] });
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, node, "ack");
    agent.child.kill("SIGTERM");
    assert.equal((await agent.exited).code, 0);
    return command;
  }

  it("SIGTERM during a job that fits the deadline: the job finishes and the agent exits 0", async () => {
    const command = await sigtermDuringProbe("term-1", 2, 30);
    await fleet.waitForNodeEvent(command.id, "term-1", "done");
    assert.equal(countInLog(await probeLog(fleet, "term-1"), command.id), 1);
  });

  it("SIGTERM during a job longer than the deadline: it is reported interrupted, never done, and the agent exits 0", async () => {
    const command = await sigtermDuringProbe("term-2", 60, 1);
    await fleet.waitForEvent(
      (e) => e.correlationId === command.id && e.type === "progress" && String((e.payload as { message: string }).message).includes("interrupted"),
      "an interrupted report",
    );
    assert.equal(fleet.eventsFor(command.id, "done").length, 0);
    assert.equal(countInLog(await probeLog(fleet, "term-2"), command.id), 0);
  });
});

describe("the coordinator keeps fleet state", () => {
  let fleet: TestFleet;
  before(async () => {
    fleet = await TestFleet.start({ heartbeatSeconds: 1, lostAfterSeconds: 3 });
  });
  after(() => fleet.close());

  it("reports a node that stops heartbeating as lost and publishes node-down", async () => {
    await fleet.startCoordinator();
    const agent = await fleet.startAgent("gone-1", ["web"]);
    await fleet.waitForEvent((e) => e.type === "heartbeat" && (e.payload as { node: { id: string } }).node.id === "gone-1", "a heartbeat");
    await fleet.waitForNodes(["gone-1"]);
    const listed = await fleet.bosun(["nodes", "--json"]);
    assert.equal((JSON.parse(listed.stdout) as { id: string; status: string }[]).find((n) => n.id === "gone-1")?.status, "up");
    agent.child.kill("SIGKILL");
    const down = await fleet.waitForEvent(
      (e) => e.type === "node-down" && (e.payload as { node: { id: string } }).node.id === "gone-1",
      "node-down for gone-1",
      20_000,
    );
    assert.equal((down.payload as { reason: string }).reason, "lost");
    assert.equal(down.issuer, "coordinator");
    // The snapshot that `bosun nodes` reads follows within a second or so.
    let status: string | undefined;
    for (let i = 0; i < 50 && status !== "lost"; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 200));
      const after = await fleet.bosun(["nodes", "--json"]);
      status = (JSON.parse(after.stdout) as { id: string; status: string }[]).find((n) => n.id === "gone-1")?.status;
    }
    assert.equal(status, "lost");
  });

  it("a decommissioned node announces node-down, removes its queue and exits 0", async () => {
    const agent = await fleet.startAgent("retire-1", ["web"]);
    const command = fleet.command("decommission", { reason: "scale in" }, { nodes: ["retire-1"] });
    await fleet.publish(command);
    await fleet.waitForNodeEvent(command.id, "retire-1", "done");
    const down = await fleet.waitForEvent(
      (e) => e.type === "node-down" && (e.payload as { node: { id: string } }).node.id === "retire-1",
      "node-down for retire-1",
    );
    assert.equal((down.payload as { reason: string }).reason, "decommissioned");
    assert.equal((await agent.exited).code, 0);
    await assert.rejects(queueDepth(fleet, fleet.nodeQueueName("retire-1")), /does not exist|NonExistentQueue/i);
  });
});

describe("scheduled commands", () => {
  it("the coordinator publishes a scheduled command that agents carry out", async () => {
    const fleet = await TestFleet.start();
    try {
      await fleet.startAgent("cron-web-1", ["web"]);
      await fleet.startCoordinator({
        BOSUN_SCHEDULES: JSON.stringify([{ name: "probe-web", cron: "* * * * * *", type: "probe", target: "role:web", payload: {} }]),
      });
      const done = await fleet.waitForEvent(
        (e) => e.type === "done" && (e.payload as { node: { id: string } }).node.id === "cron-web-1",
        "a scheduled probe to finish",
      );
      const ack = fleet.eventsFor(done.correlationId, "ack")[0];
      assert.ok(ack, "the scheduled command was acknowledged");
      assert.equal((await probeLog(fleet, "cron-web-1")).length >= 1, true);
    } finally {
      await fleet.close();
    }
  });
});
