import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Envelope } from "@bosun/core";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";
import { Moto, MotoAccount, motoMissing } from "./helpers/moto.ts";
import { until } from "./helpers/until.ts";

/**
 * An AWS target group (ELBv2 on moto_server) that follows the web nodes' node-up, node-down and
 * drains: kept by the coordinator, or by a balancer agent, as the config says.
 */
const missing = motoMissing();
if (missing) it("needs moto_server", () => assert.fail(missing));

describe("AWS target groups follow the fleet (ELBv2 on moto)", { skip: missing ?? false }, () => {
  let moto: Moto;
  let account: MotoAccount;
  let fleet: TestFleet;
  let vpcId: string;
  let subnetId: string;
  let coordinator: TestProcess;
  let env: Record<string, string>;

  const nodeEvent = (type: "node-up" | "node-down", node: string, host: string, roles = ["web"], port = 8080): Envelope => fleet.nodeEvent(type, node, { host, roles, port });

  const registered = (arn: string, ids: string[]) =>
    until(async () => {
      const targets = await account.targets(arn);
      return ids.every((id) => targets.some((t) => t.id === id && t.state !== "unused" && t.state !== "draining")) ? targets : undefined;
    }, `${ids.join(", ")} registered in the target group`);

  before(async () => {
    moto = await Moto.start();
    account = new MotoAccount(moto.endpoint);
    ({ vpcId, subnetId } = await account.network("10.0.0.0/16"));
    // Nodes announced by hand send no heartbeats: the coordinator must not declare them lost mid-test.
    fleet = await TestFleet.start({ lostAfterSeconds: 600 });
    // ELBv2 (and EC2) on moto, everything else on the emulator: the SDK's per-service endpoint variables.
    env = { AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2: moto.endpoint, AWS_ENDPOINT_URL_EC2: moto.endpoint };
  });

  after(async () => {
    await fleet?.close();
    account?.close();
    await moto?.stop();
  });

  it("kept by the coordinator: node-up registers, a duplicate adds no target, bad input registers nothing, lb status shows state, drain and node-down deregister", async () => {
    const arn = await account.targetGroup(vpcId, "coord-web", 2);
    const [web1, web2, db1, outside] = await account.instances(subnetId, 4);
    const groupEnv = { ...env, BOSUN_TARGET_GROUP: JSON.stringify({ arn, runBy: "coordinator", targetType: "instance", networks: ["10.0.0.0/16"] }) };
    coordinator = await fleet.startCoordinator(groupEnv);
    try {
      await fleet.publish(nodeEvent("node-up", web1!, "10.0.1.11"));
      await fleet.publish(nodeEvent("node-up", web2!, "10.0.1.12", ["web"], 8081));
      const targets = await registered(arn, [web1!, web2!]);
      assert.deepEqual(targets.map((t) => `${t.id}:${t.port}`).sort(), [`${web1}:8080`, `${web2}:8081`].sort());

      // Bad input: an address outside the configured networks, and a node that is not a web node.
      await fleet.publish(nodeEvent("node-up", outside!, "192.168.7.7"));
      await coordinator.waitForLog((r) => r.msg === "web node refused as a target" && r["node"] === outside, "the outside address refused");
      await fleet.publish(nodeEvent("node-up", db1!, "10.0.1.13", ["db"]));
      // A duplicate node-up: the same target, once.
      await fleet.publish(nodeEvent("node-up", web1!, "10.0.1.11"));
      await fleet.waitForNodes([db1!, outside!, web1!, web2!]);
      // The coordinator folds an event into the fleet snapshot after it has followed it in the target group.
      const after = await account.targets(arn);
      assert.deepEqual(after.map((t) => t.id).sort(), [web1!, web2!].sort(), "only the two web nodes inside the networks, once each");

      // bosun lb status reads the group from ELBv2 itself.
      const status = await fleet.bosun(["lb", "status", "--json"], groupEnv);
      assert.equal(status.code, 0, status.stderr);
      const group = (JSON.parse(status.stdout) as { targetGroup: { arn: string; deregistrationDelaySeconds: number; targets: { id: string; node?: string; state: string; port: number }[] } }).targetGroup;
      assert.equal(group.arn, arn);
      assert.equal(group.deregistrationDelaySeconds, 2);
      assert.deepEqual(group.targets.map((t) => [t.node, t.port]).sort(), [[web1, 8080], [web2, 8081]].sort());
      for (const t of group.targets) assert.match(t.state, /^(initial|healthy|unhealthy|unavailable)$/);
      const text = await fleet.bosun(["lb", "status"], groupEnv);
      assert.match(text.stdout, new RegExp(`target group ${arn.replace(/[/.]/g, "\\$&")} \\(kept by the coordinator, deregistration delay 2 s\\)`));
      assert.match(text.stdout, new RegExp(`${web1} +8080 +${web1} +\\w+`));

      // A drain deregisters (ELBv2 drains for the deregistration delay) and says when it is over; enable registers again.
      const drain = await fleet.bosun(["lb", "drain", web2!, "--json", "--timeout", "5"], groupEnv);
      const drained = JSON.parse(drain.stdout) as { targetGroup: { node: string; drained: boolean; delaySeconds: number } };
      assert.deepEqual({ node: drained.targetGroup.node, drained: drained.targetGroup.drained, delay: drained.targetGroup.delaySeconds }, { node: web2, drained: true, delay: 2 });
      assert.deepEqual((await account.targets(arn)).map((t) => t.id), [web1]);
      const enable = await fleet.bosun(["lb", "enable", web2!, "--json", "--timeout", "5"], groupEnv);
      assert.equal(enable.stderr.includes("BACKEND_UNKNOWN"), false, enable.stderr);
      await registered(arn, [web1!, web2!]);

      // Node-down deregisters.
      await fleet.publish(nodeEvent("node-down", web1!, "10.0.1.11"));
      await until(async () => ((await account.targets(arn)).some((t) => t.id === web1) ? undefined : true), `${web1} deregistered`);
    } finally {
      await coordinator.stop(15_000);
    }
  });

  it("kept by a balancer agent (no HAProxy on it): node-up registers by address in an ip group, node-down deregisters", async () => {
    const out = await account.elbv2.send(
      new (await import("@aws-sdk/client-elastic-load-balancing-v2")).CreateTargetGroupCommand({ Name: "agent-web", Protocol: "HTTP", Port: 80, VpcId: vpcId, TargetType: "ip" }),
    );
    const arn = out.TargetGroups![0]!.TargetGroupArn!;
    const lb = await fleet.startAgent("lb-tg", ["balancer"], { ...env, BOSUN_TARGET_GROUP: JSON.stringify({ arn, runBy: "balancer", targetType: "ip", networks: ["10.0.0.0/16"] }) });
    try {
      await lb.waitForLog((r) => r.msg === "following the fleet's web nodes", "the balancer to subscribe");
      await fleet.publish(nodeEvent("node-up", "web-ip-1", "10.0.1.21"));
      await fleet.publish(nodeEvent("node-up", "web-ip-2", "172.16.0.9"));
      await registered(arn, ["10.0.1.21"]);
      await lb.waitForLog((r) => r.msg === "web node refused as a target" && r["node"] === "web-ip-2", "the outside address refused");
      const ids = (await account.targets(arn)).map((t) => `${t.id}:${t.port}`);
      // (Web nodes the fleet record lists as up, from another test of this file, are registered at the agent's start too.)
      assert.ok(ids.includes("10.0.1.21:8080") && !ids.some((id) => id.startsWith("172.16.")), ids.join(", "));
      // The node-down carries no address: the agent remembers where the node was registered.
      await fleet.publish(nodeEvent("node-down", "web-ip-1", "10.0.1.21"));
      await until(async () => ((await account.targets(arn)).some((t) => t.id === "10.0.1.21") ? undefined : true), "web-ip-1 deregistered");
    } finally {
      await lb.stop(15_000);
    }
  });
});
