import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { TestFleet } from "./helpers/fleet.ts";
import { FakeEc2 } from "./helpers/fake-ec2.ts";

describe("an agent on EC2 takes its identity from instance metadata and tags", () => {
  let fleet: TestFleet;
  before(async () => {
    fleet = await TestFleet.start();
  });
  after(() => fleet.close());

  /** Runs `bosun agent` with no --node-id against the stand-ins, to completion. */
  const runAgentOn = (ec2: FakeEc2) =>
    fleet.bosun(["agent"], {
      AWS_EC2_METADATA_SERVICE_ENDPOINT: ec2.imdsEndpoint,
      AWS_ENDPOINT_URL_EC2: ec2.ec2Endpoint,
    });

  it("uses the IMDSv2 instance id and the bosun:role tag, and serves commands for those roles", async () => {
    const ec2 = new FakeEc2("i-0abc123def4567890", { "bosun:role": "web,balancer", Name: "web-a" });
    await ec2.start();
    try {
      const env = { AWS_EC2_METADATA_SERVICE_ENDPOINT: ec2.imdsEndpoint, AWS_ENDPOINT_URL_EC2: ec2.ec2Endpoint };
      const agent = fleet.spawn("ec2-agent", ["agent"], {
        BOSUN_STATE_DIR: fleet.stateDir("ec2"),
        ...env,
      });
      const running = await agent.waitForLog((r) => r.msg === "agent running", "the agent to start");
      assert.deepEqual(running["roles"], ["web", "balancer"]);
      assert.equal(running["node"], "i-0abc123def4567890");
      const token = ec2.requests.find((r) => r.method === "PUT" && r.path === "/latest/api/token");
      assert.ok(token, "a session token was requested (IMDSv2)");
      assert.ok(ec2.requests.some((r) => r.path === "/latest/meta-data/instance-id" && r.tokenHeader), "the metadata read carried the token");
      assert.ok(ec2.requests.some((r) => r.body?.includes("Action=DescribeTags") && r.body.includes("i-0abc123def4567890")));

      const command = fleet.command("probe", {}, { roles: ["balancer"] });
      await fleet.publish(command);
      await fleet.waitForNodeEvent(command.id, "i-0abc123def4567890", "done");
    } finally {
      await ec2.stop();
    }
  });

  it("refuses to start, saying why, when the instance has no bosun:role tag", async () => {
    const ec2 = new FakeEc2("i-0untagged000000000", { Name: "mystery" });
    await ec2.start();
    try {
      const result = await runAgentOn(ec2);
      assert.equal(result.code, 3);
      assert.match(result.stderr, /Instance i-0untagged000000000 has no "bosun:role" tag/);
    } finally {
      await ec2.stop();
    }
  });

  it("refuses to start when the instance is tagged for another cluster", async () => {
    const ec2 = new FakeEc2("i-0othercluster00000", { "bosun:role": "web", "bosun:cluster": "elsewhere" });
    await ec2.start();
    try {
      const result = await runAgentOn(ec2);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /tagged bosun:cluster=elsewhere but the cluster setting \(BOSUN_CLUSTER\) is "t[0-9a-f]+"/);
    } finally {
      await ec2.stop();
    }
  });

  it("off EC2 without --node-id, it says to pass --node-id and --role", async () => {
    const result = await fleet.bosun(["agent"], {
      AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://127.0.0.1:9",
    });
    assert.equal(result.code, 3);
    assert.match(result.stderr, /Cannot read the instance id from EC2 instance metadata \(IMDSv2\).*pass --node-id and --role/);
  });
});
