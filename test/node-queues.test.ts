import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { CreateQueueCommand, GetQueueUrlCommand, ListQueueTagsCommand, ListQueuesCommand } from "@aws-sdk/client-sqs";
import { ListSubscriptionsByTopicCommand } from "@aws-sdk/client-sns";
import { join } from "node:path";
import type { Envelope } from "@bosun/core";
import { TestFleet } from "./helpers/fleet.ts";
import { decide, iamRequests, readCalls, synthesiseCluster } from "./helpers/iam.ts";

/** The queues agents and the coordinator made for a cluster, by name. */
async function queueNames(fleet: TestFleet): Promise<string[]> {
  const out = await fleet.clients.sqs.send(new ListQueuesCommand({ QueueNamePrefix: `bosun-${fleet.cluster}-` }));
  return (out.QueueUrls ?? []).map((url) => url.split("/").pop()!).sort();
}

async function subscribedQueues(fleet: TestFleet): Promise<string[]> {
  const out = await fleet.clients.sns.send(new ListSubscriptionsByTopicCommand({ TopicArn: fleet.topicArn }));
  return (out.Subscriptions ?? []).map((s) => s.Endpoint!.split(":").pop()!).sort();
}

describe("queues of nodes that are gone", () => {
  let fleet: TestFleet;
  before(async () => {
    // Lost after 4 s of silence (the fleet's setting); queues go 2 s of silence after that.
    fleet = await TestFleet.start({ nodeQueueGraceSeconds: 2 });
  });
  after(() => fleet.close());

  it("carry the cluster, node and role tags, and the coordinator removes those of lost and decommissioned nodes, with their subscriptions, and says so", async () => {
    // What the coordinator calls is checked against its policies in the CDK app, as test/iam.test.ts does for the rest.
    const synthesised = synthesiseCluster();
    const callLog = join(fleet.dir, "calls-coordinator.jsonl");
    await fleet.startCoordinator({ BOSUN_AWS_CALL_LOG: callLog });
    const [gone, leaving] = await Promise.all([fleet.startAgent("gone-1", ["web"]), fleet.startAgent("leaving-1", ["web"]), fleet.startAgent("staying-1", ["web"])]);
    // The dead-letter queue is of kind dead-letter: the stack's alarm finds node DLQs by that tag.
    for (const [name, kind] of [[fleet.nodeQueueName("leaving-1"), "node"], [`${fleet.nodeQueueName("leaving-1")}-dlq`, "dead-letter"]] as const) {
      const { QueueUrl } = await fleet.clients.sqs.send(new GetQueueUrlCommand({ QueueName: name }));
      const { Tags } = await fleet.clients.sqs.send(new ListQueueTagsCommand({ QueueUrl }));
      assert.deepEqual(Tags, { "bosun:cluster": fleet.cluster, "bosun:kind": kind, "bosun:node": "leaving-1", "bosun:role": "web" }, name);
    }
    await fleet.waitForNodes(["gone-1", "leaving-1", "staying-1"]);
    // A queue named for the node but without the tags (made before there were tags): not the coordinator's to judge.
    const untagged = `bosun-${fleet.cluster}-lb-gone-1`;
    await fleet.clients.sqs.send(new CreateQueueCommand({ QueueName: untagged }));

    // One dies without a word; one is decommissioned (it removes its queue, and keeps its dead letters for a person).
    gone!.child.kill("SIGKILL");
    await fleet.publish(fleet.command("decommission", { reason: "scale in" }, { nodes: ["leaving-1"] }));
    assert.deepEqual((await leaving!.exited).code, 0);

    const removed = (id: string) => fleet.waitForEvent((e) => e.type === "queues-removed" && (e.payload as { node: { id: string } }).node.id === id, `queues-removed for ${id}`, 30_000);
    const [goneEvent, leavingEvent] = (await Promise.all([removed("gone-1"), removed("leaving-1")])).map((e: Envelope) => e.payload as { status: string; queues: string[]; subscriptions: string[] });
    const queue = (id: string) => fleet.nodeQueueName(id);
    assert.equal(goneEvent!.status, "lost");
    assert.deepEqual(goneEvent!.queues, [queue("gone-1"), `${queue("gone-1")}-dlq`]);
    assert.equal(goneEvent!.subscriptions.length, 1);
    assert.equal(leavingEvent!.status, "down");
    assert.deepEqual(leavingEvent!.queues, [`${queue("leaving-1")}-dlq`]);
    assert.deepEqual(leavingEvent!.subscriptions, []);

    const names = await queueNames(fleet);
    assert.ok(names.includes(untagged), `the untagged queue stays: ${names.join(", ")}`);
    for (const id of ["gone-1", "leaving-1"]) assert.ok(!names.some((n) => n.startsWith(queue(id))), `${id}'s queues are gone: ${names.join(", ")}`);
    // The node still up keeps its queue, dead-letter queue and subscription; so does the coordinator.
    assert.ok(names.includes(queue("staying-1")) && names.includes(`${queue("staying-1")}-dlq`), names.join(", "));
    const subscribed = await subscribedQueues(fleet);
    assert.ok(subscribed.includes(queue("staying-1")), subscribed.join(", "));
    assert.ok(!subscribed.includes(queue("gone-1")), subscribed.join(", "));

    // Every call it made to find and remove them is one its IAM role allows.
    const aws = await synthesised;
    const calls = await readCalls(callLog);
    for (const operation of ["sqs:ListQueueTags", "sqs:DeleteQueue", "sns:Unsubscribe"]) {
      assert.ok(calls.some((c) => `${c.service}:${c.operation}` === operation), `the coordinator called ${operation}`);
    }
    const denied: string[] = [];
    for (const call of calls) {
      for (const request of iamRequests(call, { cluster: fleet.cluster, bucket: `b-${fleet.cluster}` }, aws)) {
        const decision = await decide(aws, "coordinator", request);
        if (decision !== "Allowed") denied.push(`${request.action} on ${request.resource} (${decision})`);
      }
    }
    assert.deepEqual([...new Set(denied)], []);

    // The fleet records it, so a later sweep does not look again.
    const nodes = JSON.parse((await fleet.bosun(["nodes", "--all", "--json"])).stdout) as { id: string; queuesRemovedAt?: string }[];
    assert.ok(nodes.find((n) => n.id === "gone-1")?.queuesRemovedAt, JSON.stringify(nodes));
  });
});
