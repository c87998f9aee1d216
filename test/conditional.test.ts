import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { GetBucketLocationCommand, S3Client } from "@aws-sdk/client-s3";
import { Lease, StateStore, createAwsClients, destroyAwsClients, ensureBucket, stateKeys, type AwsClients } from "@bosun/aws";
import { desiredReleases, type Issuer } from "@bosun/coordinator";
import { AwsError, settingsSchema, type DesiredRelease } from "@bosun/core";
import { TestFleet } from "./helpers/fleet.ts";
import { Moto, motoMissing } from "./helpers/moto.ts";

/**
 * What only an S3 that enforces conditional writes shows (AWS does; the SQS/SNS/S3 emulator
 * ignores If-Match and If-None-Match): these run against moto_server.
 */
const missing = motoMissing();
if (missing) it("needs moto_server", () => assert.fail(missing));

describe("writers never silently overwrite each other (S3 conditional writes, on moto)", { skip: missing ?? false }, () => {
  let moto: Moto;
  let fleet: TestFleet;
  before(async () => {
    moto = await Moto.start();
    fleet = await TestFleet.start({ coordinatorLeaseSeconds: 3 }, { s3Endpoint: moto.endpoint });
  });
  after(async () => {
    await fleet?.close();
    await moto?.stop();
  });

  const store = () => new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` });
  const issuerWith = (key: string): Issuer => ({
    settings: settingsSchema.parse({ cluster: fleet.cluster, bucket: `b-${fleet.cluster}` }),
    clients: fleet.clients,
    trust: () => fleet.trust,
    signer: () => fleet.signers.get(key)!,
    topicArn: async () => fleet.topicArn,
    verifier: async () => fleet.verifier,
  });

  it("publishers at once never leave the desired release naming an older one", async () => {
    for (let trial = 0; trial < 5; trial++) {
      const app = `race-${trial}`;
      const release = (sequence: number): DesiredRelease => ({
        app,
        repo: "/srv/repo",
        commit: sequence.toString(16).padStart(40, "0"),
        ref: "main",
        sequence,
        publishedAt: new Date().toISOString(),
        issuer: "ci",
      });
      // Twelve publishers, each reading then writing; the sequences are shuffled, so the newest is not the last to start.
      const sequences = Array.from({ length: 12 }, (_, i) => 1000 + i).sort(() => Math.random() - 0.5);
      await Promise.all(sequences.map((sequence, i) => desiredReleases(issuerWith(i % 2 ? "ci" : "oncall")).record(app, () => release(sequence))));
      assert.equal((await desiredReleases(issuerWith("ci")).read(app))?.sequence, 1011, `trial ${trial}: the newest release is desired`);
    }
  });

  it("a plain write does lose an update that a conditional one keeps (the control)", async () => {
    // Two read-change-writes interleaved by hand: with conditions the second notices and reads again.
    const key = "state/test/counter.json";
    const s = store();
    await s.put(key, { n: 0 });
    const a = await s.getVersioned<{ n: number }>(key);
    const b = await s.getVersioned<{ n: number }>(key);
    await s.put(key, { n: a!.value.n + 1 }, { ifMatch: a!.etag });
    await assert.rejects(s.put(key, { n: b!.value.n + 1 }, { ifMatch: b!.etag }), /changed since it was read/);
    const counted = await Promise.all(Array.from({ length: 10 }, () => s.update<{ n: number }>(key, (current) => ({ n: (current?.n ?? 0) + 1 }))));
    assert.equal(counted.length, 10);
    assert.equal((await s.get<{ n: number }>(key))?.n, 11, "every update counted, none lost");
  });

  it("one lease holder at a time; a silent holder is replaced once its lease expires, and then knows it lost", async () => {
    let now = Date.now();
    const clock = { now: () => new Date(now) };
    const lease = (holder: string) => new Lease({ store: store(), clock }, { key: stateKeys.lease("test"), holder, ttlMs: 3000 });
    const a = lease("a");
    const b = lease("b");
    const [gotA, gotB] = await Promise.all([a.acquire(), b.acquire()]);
    assert.equal(Number(gotA) + Number(gotB), 1, "exactly one of two takes it");
    const [holder, other] = gotA ? [a, b] : [b, a];
    assert.equal(await holder.renew(), true);
    assert.equal(await other.acquire(), false, "not while it is held");
    now += 3500;
    assert.equal(await other.acquire(), true, "an expired lease is taken over");
    assert.equal(await holder.renew(), false, "the old holder learns it lost at its next renewal");
    assert.ok(other.epoch > holder.epoch, "the new holder writes a higher epoch");
  });

  it("two coordinators started by mistake: only one runs the schedules, and the other takes over when it dies", async () => {
    const schedules = JSON.stringify([{ name: "tick", cron: "* * * * * *", type: "probe", target: "role:nobody", payload: {} }]);
    const first = await fleet.startCoordinator({ BOSUN_SCHEDULES: schedules });
    const second = fleet.spawn("coordinator-2", ["coordinator"], { BOSUN_KEY_ID: "coordinator", BOSUN_SIGNING_KEY: `${fleet.dir}/keys/coordinator.key`, BOSUN_SCHEDULES: schedules });
    await second.waitForLog((r) => r.msg === "coordinator running", "the second coordinator to start", 20_000);
    const leaderOf = () => [first, second].filter((p) => p.logs.items.some((r) => r.msg === "coordinator leading"));
    const scheduled = (p: typeof first) => p.logs.items.filter((r) => r.msg === "publishing scheduled command").length;
    await first.waitForLog((r) => r.msg === "publishing scheduled command", "a scheduled command", 20_000).catch(() => second.waitForLog((r) => r.msg === "publishing scheduled command", "a scheduled command"));
    // Several seconds of schedules: all from one of them.
    await new Promise((r) => setTimeout(r, 3000));
    const leaders = leaderOf();
    assert.equal(leaders.length, 1, "one coordinator leads");
    const leader = leaders[0]!;
    const standby = leader === first ? second : first;
    assert.equal(scheduled(standby), 0, "the standby runs no schedule");
    assert.ok(scheduled(leader) >= 2);

    leader.child.kill("SIGKILL");
    await leader.exited;
    await standby.waitForLog((r) => r.msg === "coordinator leading", "the standby to take over", 20_000);
    await standby.waitForLog((r) => r.msg === "publishing scheduled command", "the standby's first scheduled command", 20_000);
  });
});

describe("the cluster's bucket", { skip: missing ?? false }, () => {
  let moto: Moto;
  before(async () => void (moto = await Moto.start()));
  after(() => moto?.stop());

  it("is made in the region asked for, outside us-east-1 too", async () => {
    const clients: AwsClients = createAwsClients({ endpoint: moto.endpoint, region: "eu-west-1" });
    try {
      await ensureBucket(clients, "bosun-eu-test");
      await ensureBucket(clients, "bosun-eu-test");
      const location = await new S3Client({ endpoint: moto.endpoint, region: "eu-west-1", forcePathStyle: true, credentials: { accessKeyId: "t", secretAccessKey: "t" } }).send(
        new GetBucketLocationCommand({ Bucket: "bosun-eu-test" }),
      );
      assert.equal(location.LocationConstraint, "eu-west-1");
    } finally {
      destroyAwsClients(clients);
    }
  });

  it("a bucket this identity may not use is an error saying so, not something to create", async () => {
    const forbidden = Object.assign(new Error("Forbidden"), { name: "403", $metadata: { httpStatusCode: 403 } });
    const s3 = { send: async () => Promise.reject(forbidden), config: { region: async () => "us-east-1" } };
    const clients = { s3 } as unknown as AwsClients;
    await assert.rejects(ensureBucket(clients, "someone-elses"), (error: unknown) => error instanceof AwsError && /exists but this identity may not use it \(403\)/.test(error.message));
  });
});
