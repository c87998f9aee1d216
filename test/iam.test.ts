import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { RecordedCall } from "@bosun/aws";
import { TestFleet } from "./helpers/fleet.ts";
import { SiteRepo, freePort } from "./helpers/web.ts";
import { MariaDb, loadDemoData, mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { decide, iamRequests, principals, readCalls, synthesiseCluster, without, type IamRequest, type Principal, type SynthesisedCluster } from "./helpers/iam.ts";

const tools = needs({ git: "git", haproxy: "haproxy", ...mariadbTools });

/**
 * IAM proven against the code, both ways. Each Bosun user runs its flows against the emulator
 * with the call recorder on (BOSUN_AWS_CALL_LOG): the agents of each node role (start,
 * heartbeats, a command), the coordinator, CI's `bosun release --wait`, and the on-call
 * engineer's `bosun rollback`, `bosun backup now` and `bosun send probe`. Every recorded call is
 * evaluated against that role's synthesised policies with an IAM policy simulator and must be
 * allowed; calls no role of that kind may make must be denied.
 */
describe("IAM policies against the calls Bosun makes", { skip: tools.skip }, () => {
  let fleet: TestFleet;
  let db: MariaDb | undefined;
  let aws: SynthesisedCluster;
  const calls = new Map<Principal, RecordedCall[]>();
  const log = (who: Principal) => join(fleet.dir, `calls-${who}.jsonl`);
  const record = (who: Principal) => ({ BOSUN_AWS_CALL_LOG: log(who) });
  /** Where the recorded calls were made, and the instance ARN each test node had (its node id). */
  const place = () => ({ cluster: fleet.cluster, bucket: `b-${fleet.cluster}` });
  const instance = (nodeId: string) => `arn:aws:ec2:${aws.region}:${aws.account}:instance/${nodeId}`;
  const nodeOf: Partial<Record<Principal, string>> = { web: "web-1", db: "db-1", balancer: "lb-1" };

  /** The IAM requests of a principal's recorded calls, with the context IAM would add (a node's own instance ARN). */
  const requestsOf = (who: Principal): IamRequest[] =>
    (calls.get(who) ?? []).flatMap((call) =>
      iamRequests(call, place(), aws).map((r) => ({ ...r, context: { ...r.context, ...(nodeOf[who] ? { "ec2:SourceInstanceARN": instance(nodeOf[who]) } : {}) } })),
    );

  before(async () => {
    const synthesised = synthesiseCluster();
    fleet = await TestFleet.start({ lostAfterSeconds: 600 });
    const repo = await SiteRepo.create(join(fleet.dir, "site"));
    await repo.commit({ "index.html": "first\n" }, "first");
    db = await MariaDb.start({ serverId: 1, name: "primary" });
    await loadDemoData(db, 20);
    const haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => existsSync(p)) ?? "haproxy";
    await fleet.startCoordinator(record("coordinator"));
    await Promise.all([
      fleet.startAgent("web-1", ["web"], {
        ...record("web"),
        BOSUN_APPS: JSON.stringify({ demo: { root: join(fleet.dir, "www", "demo"), repos: [repo.dir], keep: 1, graceSeconds: 0 } }),
        BOSUN_WEB: JSON.stringify({ advertise: { host: "127.0.0.1", port: 8 } }),
      }),
      fleet.startAgent("db-1", ["db"], {
        ...record("db"),
        BOSUN_DB: JSON.stringify({ socket: db.socket, user: "root", dataDir: db.dataDir, backup: { kind: "logical", compression: "gzip", partMB: 5 } }),
      }),
      fleet.startAgent("lb-1", ["balancer"], {
        ...record("balancer"),
        BOSUN_BALANCER: JSON.stringify({ haproxy, dir: join(fleet.dir, "haproxy"), listen: { host: "127.0.0.1", port: await freePort() }, networks: ["127.0.0.0/8"] }),
      }),
    ]);
    await fleet.waitForNodes(["web-1", "db-1", "lb-1"]);

    const ci = { ...record("ci"), BOSUN_KEY_ID: "ci", BOSUN_SIGNING_KEY: join(fleet.dir, "keys", "ci.key") };
    const release = async () => {
      const out = await fleet.bosun(["release", "--app", "demo", "--repo", repo.dir, "--ref", "main", "--wait", "--timeout", "60", "--json"], ci);
      assert.equal(out.code, 0, `release: ${out.stdout}\n${out.stderr}`);
    };
    await release();
    await repo.commit({ "index.html": "second\n" }, "second");
    await release();
    const operator = record("operator");
    for (const args of [
      ["rollback", "--app", "demo", "--wait", "--timeout", "60", "--json"],
      ["backup", "now", "--node", "db-1", "--wait", "--timeout", "120", "--json"],
      ["send", "probe", "--target", "all", "--wait", "--timeout", "30", "--json"],
      ["nodes", "--json"],
    ]) {
      const out = await fleet.bosun(args, operator);
      assert.equal(out.code, 0, `${args.join(" ")}: ${out.stdout}\n${out.stderr}`);
    }
    aws = await synthesised;
    for (const who of principals) calls.set(who, await readCalls(log(who)));
  });

  after(async () => {
    await fleet?.close();
    await db?.stop();
  });

  it("records the calls of every user", () => {
    const counts = Object.fromEntries(principals.map((p) => [p, calls.get(p)!.length]));
    for (const who of principals) assert.ok(counts[who]! > 0, `no calls recorded for ${who}: ${JSON.stringify(counts)}`);
    const by = (who: Principal) => new Set(calls.get(who)!.map((c) => `${c.service}:${c.operation}`));
    assert.ok(by("db").has("s3:CreateMultipartUpload") || by("db").has("s3:PutObject"), "the db node's backup went up");
    assert.ok(by("ci").has("s3:PutObject"), "CI wrote the desired release");
    assert.ok(by("operator").has("s3:PutObject"), "the operator's rollback wrote the desired release");
    console.log(`recorded calls: ${JSON.stringify(counts)}`);
  });

  for (const who of principals) {
    it(`allows every call ${who} made`, async () => {
      const denied: string[] = [];
      const seen = new Set<string>();
      for (const request of requestsOf(who)) {
        const key = `${request.action} ${request.resource} ${JSON.stringify(request.context)}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const decision = await decide(aws, who, request);
        if (decision !== "Allowed") denied.push(`${request.action} on ${request.resource} (${decision})`);
      }
      assert.deepEqual(denied, [], `${who} made calls its policies deny`);
      console.log(`${who}: ${seen.size} distinct requests allowed`);
    });
  }

  /** A request on the synthesised cluster, with the caller's instance ARN for node roles. */
  const request = (who: Principal, action: string, resource: string, context: Record<string, string> = {}): IamRequest => ({
    action,
    resource,
    context: { ...(nodeOf[who] ? { "ec2:SourceInstanceARN": instance(`i-0${who}`) } : {}), ...context },
  });
  const object = (key: string) => `arn:aws:s3:::${aws.bucket}/${key}`;
  const queue = (name: string) => `arn:aws:sqs:${aws.region}:${aws.account}:bosun-${aws.cluster}-${name}`;
  const elasticIp = () => `arn:aws:ec2:${aws.region}:${aws.account}:elastic-ip/eipalloc-0123456789abcdef0`;

  it("confines a node's writes under state/nodes/ to its own instance ARN (ec2:SourceInstanceARN)", async () => {
    for (const who of ["web", "db", "balancer"] as const) {
      const own = object(`state/nodes/${instance(`i-0${who}`)}/keys.json`);
      const other = object(`state/nodes/${instance("i-0someoneelse")}/keys.json`);
      assert.equal(await decide(aws, who, request(who, "s3:PutObject", own)), "Allowed", `${who} registers its own keys`);
      assert.equal(await decide(aws, who, request(who, "s3:PutObject", other)), "ImplicitlyDenied", `${who} writes another node's keys`);
      // Without the instance's ARN in the request (credentials not from an instance profile), no node prefix matches.
      assert.equal(await decide(aws, who, { action: "s3:PutObject", resource: own, context: {} }), "ImplicitlyDenied", `${who} without ec2:SourceInstanceARN`);
    }
  });

  it("denies what no user of that kind may do", async () => {
    const mustDeny: [Principal[], string, string, Record<string, string>?][] = [
      // A node writing another node's record or queue, backups (web, balancer) or a desired release.
      [["web", "db", "balancer"], "sqs:SendMessage", queue("node-i-0someoneelse")],
      [["web", "db", "balancer"], "s3:PutObject", object("state/fleet.json")],
      [["web", "db", "balancer"], "s3:PutObject", object("state/releases/demo.json")],
      [["web", "balancer", "ci"], "s3:PutObject", object("state/db/primary.json")],
      [["web", "balancer"], "s3:PutObject", object("backups/snapshots/x/data.sql.gz")],
      [["web", "balancer", "coordinator", "ci", "operator"], "s3:PutObject", object("backups/snapshots/x/manifest.json")],
      [["web", "db", "balancer"], "ssm:GetParameter", `arn:aws:ssm:${aws.region}:${aws.account}:parameter/bosun/${aws.cluster}/signing-keys/coordinator`],
      // CI restoring a database: it can neither find nor read a snapshot (the trust file refuses its restore command besides).
      [["ci"], "s3:GetObject", object("backups/snapshots/x/manifest.json")],
      [["ci"], "s3:ListBucket", `arn:aws:s3:::${aws.bucket}`, { "s3:prefix": "backups/snapshots/" }],
      [["ci"], "s3:PutObject", object("state/nodes/x/keys.json")],
      // Anyone but balancers moving an Elastic IP.
      [["web", "db", "coordinator", "ci", "operator"], "ec2:AssociateAddress", elasticIp(), { "aws:ResourceTag/bosun:cluster": aws.cluster }],
      // Nobody deletes the bucket, backups, or writes what every node runs as root.
      [[...principals], "s3:DeleteBucket", `arn:aws:s3:::${aws.bucket}`],
      [[...principals], "s3:DeleteObject", object("backups/snapshots/x/data.sql.gz")],
      [[...principals], "s3:PutObject", object("dist/bosun.tgz")],
      [[...principals], "s3:PutBucketPolicy", `arn:aws:s3:::${aws.bucket}`],
      [["ci", "operator"], "sqs:ReceiveMessage", queue("node-i-0web")],
    ];
    const allowed: string[] = [];
    for (const [whos, action, resource, context] of mustDeny) {
      for (const who of whos) if ((await decide(aws, who, request(who, action, resource, context))) === "Allowed") allowed.push(`${who}: ${action} on ${resource}`);
    }
    assert.deepEqual(allowed, [], "calls these roles must not make are allowed");
    // The one who may: a balancer moves the cluster's Elastic IP, and only the cluster's.
    assert.equal(await decide(aws, "balancer", request("balancer", "ec2:AssociateAddress", elasticIp(), { "aws:ResourceTag/bosun:cluster": aws.cluster })), "Allowed");
    assert.equal(await decide(aws, "balancer", request("balancer", "ec2:AssociateAddress", elasticIp(), { "aws:ResourceTag/bosun:cluster": "other" })), "ImplicitlyDenied");
  });

  it("lets the balancers and the coordinator drive only the cluster's target groups, and only balancers write the entry point's DNS record and lease", async () => {
    const group = `arn:aws:elasticloadbalancing:${aws.region}:${aws.account}:targetgroup/web/0123456789abcdef`;
    const ours = { "aws:ResourceTag/bosun:cluster": aws.cluster };
    for (const who of ["balancer", "coordinator"] as const) {
      for (const action of ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"]) {
        assert.equal(await decide(aws, who, request(who, action, group, ours)), "Allowed", `${who} ${action}`);
        assert.equal(await decide(aws, who, request(who, action, group, { "aws:ResourceTag/bosun:cluster": "other" })), "ImplicitlyDenied", `${who} ${action} on another cluster's group`);
      }
      assert.equal(await decide(aws, who, request(who, "elasticloadbalancing:DescribeTargetHealth", "*")), "Allowed");
    }
    const zone = "arn:aws:route53:::hostedzone/Z0123456789";
    assert.equal(await decide(aws, "balancer", request("balancer", "route53:ChangeResourceRecordSets", zone)), "Allowed");
    assert.equal(await decide(aws, "balancer", request("balancer", "s3:PutObject", object("state/leases/lb-www.example.com.json"))), "Allowed");
    for (const who of ["web", "db", "ci", "operator"] as const) {
      assert.equal(await decide(aws, who, request(who, "elasticloadbalancing:RegisterTargets", group, ours)), "ImplicitlyDenied", who);
      assert.equal(await decide(aws, who, request(who, "route53:ChangeResourceRecordSets", zone)), "ImplicitlyDenied", who);
    }
    for (const who of ["web", "db", "ci"] as const) {
      assert.notEqual(await decide(aws, who, request(who, "s3:PutObject", object("state/leases/lb-www.example.com.json"))), "Allowed", who);
      // Only a balancer says a leaving web node is drained (the node then stops).
      assert.notEqual(await decide(aws, who, request(who, "s3:PutObject", object("state/drains/i-0web/i-0lb.json"))), "Allowed", who);
    }
    assert.equal(await decide(aws, "balancer", request("balancer", "s3:PutObject", object("state/drains/i-0web/i-0lb.json"))), "Allowed");
  });

  it("lets db nodes snapshot volumes only under the cluster's tag, and delete only the cluster's snapshots", async () => {
    const volume = `arn:aws:ec2:${aws.region}:${aws.account}:volume/vol-0123456789abcdef0`;
    // A snapshot's ARN names no account.
    const snapshot = `arn:aws:ec2:${aws.region}::snapshot/snap-0123456789abcdef0`;
    const tagged = { "aws:RequestTag/bosun:cluster": aws.cluster };
    assert.equal(await decide(aws, "db", request("db", "ec2:CreateSnapshot", volume)), "Allowed");
    assert.equal(await decide(aws, "db", request("db", "ec2:CreateSnapshot", snapshot, tagged)), "Allowed");
    assert.equal(await decide(aws, "db", request("db", "ec2:CreateSnapshot", snapshot, { "aws:RequestTag/bosun:cluster": "other" })), "ImplicitlyDenied");
    assert.equal(await decide(aws, "db", request("db", "ec2:DeleteSnapshot", snapshot, { "aws:ResourceTag/bosun:cluster": aws.cluster })), "Allowed");
    assert.equal(await decide(aws, "db", request("db", "ec2:DeleteSnapshot", snapshot, { "aws:ResourceTag/bosun:cluster": "other" })), "ImplicitlyDenied");
    for (const who of ["web", "balancer", "coordinator", "ci", "operator"] as const) {
      assert.equal(await decide(aws, who, request(who, "ec2:DeleteSnapshot", snapshot, { "aws:ResourceTag/bosun:cluster": aws.cluster })), "ImplicitlyDenied", who);
    }
  });

  it("would fail if a grant the code needs were removed", async () => {
    // The case that reached main before: CI reads and writes state/releases/* in every `bosun release`.
    const releases = (s: { Resource: string | string[] }) => [s.Resource].flat().some((r) => r.endsWith("/state/releases/*"));
    const ciWrites = requestsOf("ci").filter((r) => r.action === "s3:PutObject" && r.resource.includes("/state/releases/"));
    assert.ok(ciWrites.length > 0, "CI's release wrote the desired release");
    assert.equal(await decide(aws, "ci", ciWrites[0]!, without(aws.policies.ci, releases)), "ImplicitlyDenied");
    // Every statement of every role: how many of them the recorded calls need (dropping one denies a call).
    const needed: Record<string, string> = {};
    for (const who of principals) {
      const requests = [...new Map(requestsOf(who).map((r) => [`${r.action} ${r.resource} ${JSON.stringify(r.context)}`, r])).values()];
      const statements = aws.policies[who].flatMap((doc) => doc.Statement);
      let count = 0;
      const unused: string[] = [];
      for (const statement of statements) {
        const reduced = without(aws.policies[who], (s) => s === statement);
        let used = false;
        for (const r of requests) {
          if ((await decide(aws, who, r, reduced)) !== "Allowed") {
            used = true;
            break;
          }
        }
        if (used) count++;
        else unused.push([statement.Action].flat().join(","));
      }
      needed[who] = `${count} of ${statements.length} (not exercised here: ${unused.join("; ")})`;
      assert.ok(count > 0, `no statement of ${who} is needed by its recorded calls`);
    }
    console.log(`statements the recorded calls need:\n${Object.entries(needed).map(([w, n]) => `  ${w}: ${n}`).join("\n")}`);
  });
});
