import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { copyFile, mkdir, readdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { CreateVolumeCommand, DescribeSnapshotsCommand, EC2Client } from "@aws-sdk/client-ec2";
import { StateStore, backupKeys, manifestDigest, pendingUploads, signRecord, stateKeys } from "@bosun/aws";
import type { BackupManifest, Envelope } from "@bosun/core";
import { NodeKeyring } from "../packages/agent/src/node-key.ts";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";
import { MariaDb, loadDemoData, mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { Moto, motoMissing } from "./helpers/moto.ts";
import { S3Proxy } from "./helpers/s3-proxy.ts";

const run = promisify(execFile);

// S3 is moto's here, not the emulator's: moto lists multipart uploads (the emulator lists none), so "no parts left behind" can be seen.
// A missing MariaDB tool fails the file, naming its package (.ci/run installs them); moto, which Debian does not package, skips it saying how to install it.
const missing = needs({ ...mariadbTools, zstd: "zstd" }).skip || motoMissing();

interface Done {
  snapshot: string;
  joined?: boolean;
  storedBytes?: number;
  rtoMs?: number;
}

/**
 * The db role with real parts: MariaDB servers of the tests' own (a primary with binary logging,
 * a replica of it marked for backups, a fresh server to restore into, and a lone primary whose S3
 * goes through a proxy the tests steer), `bosun agent` processes for the db nodes, the CLI, a
 * coordinator, S3 through the emulator and EC2 through moto_server.
 */
describe("db role: backups, restores and drills", { skip: missing ?? false }, () => {
  let fleet: TestFleet;
  let primary: MariaDb;
  let replica: MariaDb;
  let target: MariaDb;
  let lone: MariaDb;
  let coordinator: TestProcess;
  let loneAgent: TestProcess;
  let targetAgent: TestProcess;
  let proxy: S3Proxy;
  let moto: Moto;
  let volumeId: string;
  let keyFile: string;
  let targetKeyFile: string;
  let targetScratch: string;
  let store: StateStore;

  const dbEnv = (server: MariaDb, extra: Record<string, unknown> = {}, backup: Record<string, unknown> = {}) => ({
    BOSUN_DB: JSON.stringify({
      socket: server.socket,
      user: "root",
      dataDir: server.dataDir,
      replicationUser: "repl",
      replicationPasswordFile: join(fleet.dir, "repl.password"),
      backup: { kind: "logical", compression: "zstd", encryptionKeyFile: keyFile, partMB: 5, ...backup },
      ...extra,
    }),
  });
  const loneEnv = () => ({ ...dbEnv(lone), AWS_ENDPOINT_URL_S3: proxy.endpoint });
  const targetEnv = (controls = target.controls) => dbEnv(target, { ...controls, scratchDir: targetScratch }, { encryptionKeyFile: targetKeyFile });

  const manifestOf = async (snapshot: string) => (await store.get<Envelope>(backupKeys.manifest(snapshot)))!.payload as BackupManifest;

  /** Runs a bosun command that follows a db command with --wait --json; returns the node's done result, or how it failed. */
  const operation = async (args: string[]): Promise<{ code: number | null; done?: Done; failed?: { state: string; detail?: string }; stdout: string; stderr: string }> => {
    const out = await fleet.bosun([...args, "--wait", "--json", "--timeout", "300"]);
    const parsed = JSON.parse(out.stdout || "{}") as { result?: { nodes: { state: string; result?: Done; detail?: string }[] } };
    const node = parsed.result?.nodes[0];
    return { ...out, ...(node?.state === "done" ? { done: node.result! } : {}), ...(node && node.state !== "done" ? { failed: node } : {}) };
  };

  const backupOn = async (node: string, kind: string): Promise<string> => {
    const out = await operation(["backup", "now", "--node", node, "--kind", kind]);
    assert.equal(out.code, 0, out.stderr + out.stdout);
    return out.done!.snapshot;
  };

  /** A table only the restore target has: a refused restore must leave it, and the server, as they were. */
  const markTarget = async () => {
    await target.query("CREATE DATABASE IF NOT EXISTS marker; CREATE TABLE IF NOT EXISTS marker.t (x INT); DELETE FROM marker.t; INSERT INTO marker.t VALUES (42)");
  };
  const assertTargetUntouched = async (why: string) => {
    assert.ok(target.running, `${why}: the server is still running`);
    const rows = await target.query<{ x: number }[]>("SELECT x FROM marker.t");
    assert.deepEqual(rows.map((r) => r.x), [42], `${why}: the server's data was not touched`);
  };

  const objectBytes = async (key: string): Promise<Buffer> => {
    const out = await fleet.clients.s3.send(new GetObjectCommand({ Bucket: `b-${fleet.cluster}`, Key: key }));
    return Buffer.from(await out.Body!.transformToByteArray());
  };
  const putBytes = (key: string, body: Buffer) => fleet.clients.s3.send(new PutObjectCommand({ Bucket: `b-${fleet.cluster}`, Key: key, Body: body }));

  /** The result a node recorded for a command (done or failed), read from S3 where nodes keep them. */
  const resultOf = async (commandId: string, node: string, timeoutMs = 120_000): Promise<Envelope> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = await store.get<Envelope>(stateKeys.result(commandId, node));
      if (result) return result;
      if (Date.now() > deadline) {
        const logs = fleet.processes.filter((p) => p.name === node).flatMap((p) => p.logs.items.slice(-15));
        throw new Error(`timed out waiting for the result of ${commandId} on ${node}; its last logs:\n${logs.map((l) => JSON.stringify(l).slice(0, 300)).join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  /** A backup on db-4 whose upload is held at its first part while `breakIt` runs; its result as the node recorded it. */
  const backupBrokenMidUpload = async (breakIt: () => Promise<void>): Promise<Envelope> => {
    proxy.reset();
    proxy.rule = (req) => (req.method === "PUT" && /[?&]partNumber=/.test(req.url) ? "hold" : "pass");
    const command = fleet.command("backup-now", { kind: "logical" }, { nodes: ["db-4"] });
    try {
      await fleet.publish(command);
      await proxy.waitFor((r) => r.action === "hold", "the first part of the upload");
      await breakIt();
    } finally {
      proxy.release();
    }
    return resultOf(command.id, "db-4");
  };

  before(async () => {
    moto = await Moto.start();
    fleet = await TestFleet.start({ backups: { drillSchedule: "0 0 4 1 1 *" } }, { s3Endpoint: moto.endpoint });
    store = new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` });
    keyFile = join(fleet.dir, "backup.key");
    targetKeyFile = join(fleet.dir, "db-3.key");
    targetScratch = join(fleet.dir, "db-3-scratch");
    await mkdir(targetScratch, { recursive: true });
    await writeFile(keyFile, randomBytes(32).toString("hex"), { mode: 0o600 });
    await copyFile(keyFile, targetKeyFile);
    await writeFile(join(fleet.dir, "repl.password"), "replpw", { mode: 0o600 });
    proxy = await S3Proxy.start(moto.endpoint);
    const ec2 = new EC2Client({ endpoint: moto.endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" } });
    volumeId = (await ec2.send(new CreateVolumeCommand({ AvailabilityZone: "us-east-1a", Size: 8 }))).VolumeId!;
    ec2.destroy();
    // Each assigned as it starts, and all settled before going on, so `after` stops whichever started if another failed.
    const started = await Promise.allSettled([
      MariaDb.start({ serverId: 1, name: "primary" }).then((s) => (primary = s)),
      MariaDb.start({ serverId: 2, name: "replica" }).then((s) => (replica = s)),
      MariaDb.start({ serverId: 3, name: "target", controlled: true }).then((s) => (target = s)),
      MariaDb.start({ serverId: 4, name: "lone" }).then((s) => (lone = s)),
    ]);
    for (const outcome of started) if (outcome.status === "rejected") throw outcome.reason;
    await loadDemoData(primary);
    await replica.replicate(primary);
    // About 40 MB that does not compress: a dump long enough to be cut off part-way.
    await lone.query("CREATE DATABASE big; CREATE TABLE big.blobs (id INT PRIMARY KEY, data VARBINARY(1024)) ENGINE=InnoDB; INSERT INTO big.blobs SELECT seq, RANDOM_BYTES(1024) FROM big.seq_1_to_40000");
    coordinator = await fleet.startCoordinator();
    [, , targetAgent, loneAgent] = await Promise.all([
      fleet.startAgent("db-1", ["db"], dbEnv(primary, { advertise: { host: "127.0.0.1", port: primary.port } })),
      fleet.startAgent("db-2", ["db"], { ...dbEnv(replica, { backupReplica: true }, { ebsVolumeId: volumeId }), AWS_ENDPOINT_URL_EC2: moto.endpoint }),
      fleet.startAgent("db-3", ["db"], targetEnv()),
      fleet.startAgent("db-4", ["db"], loneEnv()),
    ]);
    await fleet.waitForNodes(["db-1", "db-2", "db-3", "db-4"]);
  });

  after(async () => {
    await fleet?.close();
    await proxy?.close();
    await moto?.stop();
    await Promise.allSettled([primary?.destroy(), replica?.destroy(), target?.destroy(), lone?.destroy()]);
  });

  it("a logical backup on the backup replica restores into a fresh server with every table's checksum equal, which then replicates from the primary", async () => {
    const backup = await operation(["backup", "now", "--kind", "logical"]);
    assert.equal(backup.code, 0, backup.stderr + backup.stdout);
    const snapshot = backup.done!.snapshot;
    assert.match(snapshot, /-db-2-logical-/, "taken on the replica marked for backups, not the primary");
    const manifest = await manifestOf(snapshot);
    const expected = await primary.checksums();
    assert.deepEqual(manifest.tables, expected, "the manifest records every table's checksum");
    const [row] = await primary.query<{ pos: string }[]>("SELECT @@gtid_binlog_pos AS pos");
    assert.equal(manifest.coordinates.gtid, row!.pos, "the coordinates are the primary's GTID position the replica stopped at");
    assert.equal(manifest.server.role, "replica");
    assert.ok(manifest.encryption, "encrypted on the node");
    const [status] = await replica.query<{ Slave_SQL_Running: string }[]>("SHOW SLAVE STATUS");
    assert.equal(status!.Slave_SQL_Running, "Yes", "the replica applies changes again after the backup");

    const restored = await operation(["restore", "--node", "db-3", "--snapshot", snapshot, "--replica-of", "primary"]);
    assert.equal(restored.code, 0, restored.stderr + restored.stdout);
    assert.deepEqual(await target.checksums(), expected, "every table's CHECKSUM TABLE matches after the restore");
    await primary.query("INSERT INTO shop.customers VALUES (100001, 'after the backup', 1.00, '2026-12-01')");
    await target.caughtUpWith(primary);
    const rows = await target.query<{ n: number }[]>("SELECT COUNT(*) AS n FROM shop.customers WHERE id = 100001");
    assert.equal(Number(rows[0]!.n), 1, "the restored server caught up by replication from the primary");
    await target.query("STOP SLAVE; RESET SLAVE ALL");
    await primary.query("DELETE FROM shop.customers WHERE id = 100001");
    await replica.caughtUpWith(primary);
  });

  it("a physical backup replaces the target's data directory, and the server comes back with every table's checksum equal", async () => {
    const snapshot = await backupOn("db-2", "physical");
    const manifest = await manifestOf(snapshot);
    assert.equal(manifest.kind, "physical");
    assert.ok(manifest.tables && Object.keys(manifest.tables).length >= 3);
    await markTarget();
    const restored = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(restored.code, 0, restored.stderr + restored.stdout);
    assert.deepEqual(await target.checksums(), manifest.tables, "every table's CHECKSUM TABLE matches the manifest");
    const schemas = await target.query<{ n: number }[]>("SELECT COUNT(*) AS n FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'marker'");
    assert.equal(Number(schemas[0]!.n), 0, "the data directory was replaced, not merged");
    const [id] = await target.query<{ id: number }[]>("SELECT @@server_id AS id");
    assert.equal(Number(id!.id), 3, "the restored server keeps its own server id");
  });

  it("an agent killed while a physical restore starts the new data puts the old data directory back at its next start, starts the server and raises an alert", async () => {
    await markTarget();
    const snapshot = await backupOn("db-2", "physical");
    // The server's start command hangs (a start that never returns), so the agent can be killed at that step.
    const hang = "86397";
    await targetAgent.stop();
    targetAgent = await fleet.startAgent("db-3", ["db"], targetEnv({ ...target.controls, startCommand: ["sleep", hang] }));
    const command = fleet.command("restore", { snapshot }, { nodes: ["db-3"] });
    await fleet.publish(command);
    await fleet.waitForEvent((e) => e.correlationId === command.id && e.type === "progress" && (e.payload as { message: string }).message === "starting the server", "the restore starting the server", 120_000);
    targetAgent.child.kill("SIGKILL");
    await targetAgent.exited;
    await run("pkill", ["-KILL", "-x", "-f", `sleep ${hang}`]).catch(() => undefined);
    assert.equal(target.running, false, "the agent died with the server stopped and the snapshot's data in place");
    targetAgent = await fleet.startAgent("db-3", ["db"], targetEnv());
    const alert = await fleet.waitForEvent((e) => e.type === "alert" && (e.payload as { code: string }).code === "RESTORE_INTERRUPTED", "the alert about the interrupted restore", 60_000);
    assert.match((alert.payload as { message: string }).message, /a physical restore started .* was interrupted: the data it was replacing is back in .* and the server started/);
    assert.ok(target.running, "the server runs again");
    await assertTargetUntouched("an interrupted physical restore");
    const result = await resultOf(command.id, "db-3");
    assert.equal(result.type, "failed");
    assert.equal((result.payload as { code?: string }).code, "INTERRUPTED");
    const leftovers = (await readdir(dirname(target.dataDir))).filter((name) => name.includes(".bosun-before-"));
    assert.deepEqual(leftovers, [], "no data directory is left aside");
  });

  it("a corrupted or missing object, a snapshot without its completion record, and a wrong key are refused before the server is touched, naming what is wrong", async () => {
    const snapshot = await backupOn("db-2", "logical");
    const manifest = await manifestOf(snapshot);
    const data = manifest.objects[0]!.key;
    await markTarget();

    const original = await objectBytes(data);
    const altered = Buffer.from(original);
    altered[Math.floor(altered.length / 2)]! ^= 0xff;
    await putBytes(data, altered);
    const corrupt = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(corrupt.code, 1);
    assert.match(corrupt.failed!.detail!, new RegExp(`${data.replace(/[.]/g, "\\.")} does not match its manifest`));
    await assertTargetUntouched("a corrupted object");
    const verify = await fleet.bosun(["backup", "verify", snapshot, "--json"]);
    assert.equal(verify.code, 1, "bosun backup verify fails on a corrupted object");
    assert.deepEqual((JSON.parse(verify.stdout) as { objects: { key: string; ok: boolean }[] }).objects.map((o) => [o.key, o.ok]), [[data, false]]);

    await store.delete(data);
    const gone = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(gone.code, 1);
    assert.match(gone.failed!.detail!, new RegExp(`${data.replace(/[.]/g, "\\.")} is missing`));
    await assertTargetUntouched("a missing object");
    await putBytes(data, original);
    assert.equal((await fleet.bosun(["backup", "verify", snapshot])).code, 0, "the snapshot verifies again once its object is back");

    await writeFile(targetKeyFile, randomBytes(32).toString("hex"));
    const wrongKey = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    await copyFile(keyFile, targetKeyFile);
    assert.equal(wrongKey.code, 1);
    assert.match(wrongKey.failed!.detail!, new RegExp(`encrypted with key ${manifest.encryption!.keyFingerprint}, and this node's backup key is [0-9a-f]{16}`));
    await assertTargetUntouched("a wrong key");

    const complete = await store.get(backupKeys.complete(snapshot));
    await store.delete(backupKeys.complete(snapshot));
    const incomplete = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(incomplete.code, 1);
    assert.match(incomplete.failed!.detail!, /no completion record/);
    await assertTargetUntouched("a snapshot without its completion record");
    const list = JSON.parse((await fleet.bosun(["backup", "list", "--json"])).stdout) as { snapshot: string; status: string }[];
    assert.equal(list.find((s) => s.snapshot === snapshot)?.status, "incomplete");
    await store.put(backupKeys.complete(snapshot), complete);
  });

  it("a logical load that fails part-way stops the server (its data is half-restored) and says so; the next restore starts it and completes", async () => {
    const snapshot = await backupOn("db-2", "logical");
    const manifest = await manifestOf(snapshot);
    // Packets longer than both fail on the server (it reads up to the larger of the two): the load
    // stops at the first multi-row INSERT, after it has dropped and created databases.
    await target.query("SET GLOBAL max_allowed_packet = 1024, GLOBAL net_buffer_length = 1024");
    const failed = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(failed.code, 1);
    assert.match(failed.failed!.detail!, /loading snapshot .* failed: .*the server was stopped, as its data is half-restored: restore again/);
    assert.equal(target.running, false, "no half-restored server is left running");
    const again = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(again.code, 0, again.stderr + again.stdout);
    assert.ok(target.running, "the restore started the server it had stopped");
    // A logical snapshot replaces the databases it holds; others on the target (from earlier tests) stay.
    const restored = await target.checksums();
    assert.deepEqual(Object.fromEntries(Object.keys(manifest.tables ?? {}).map((table) => [table, restored[table]])), manifest.tables);
  });

  it("a restore is refused when the disk cannot hold it, and the server is left as it was", async (t) => {
    const mounted = await run("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", targetScratch]).then(
      () => true,
      () => false,
    );
    if (!mounted) return t.skip("cannot mount a small tmpfs here (needs CAP_SYS_ADMIN)");
    try {
      const snapshot = await backupOn("db-2", "physical");
      await markTarget();
      const full = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
      assert.equal(full.code, 1);
      assert.match(full.failed!.detail!, new RegExp(`needs about .* free in ${targetScratch}, which has .*: nothing was touched`));
      await assertTargetUntouched("a full disk");
    } finally {
      await run("umount", [targetScratch]);
    }
  });

  it("two backup-now at once make one backup: the second waits for the first and reports its snapshot", async () => {
    const first = fleet.command("backup-now", { kind: "logical" }, { nodes: ["db-2"] });
    const second = fleet.command("backup-now", { kind: "logical" }, { nodes: ["db-2"] });
    await Promise.all([fleet.publish(first), fleet.publish(second)]);
    const results = await Promise.all([resultOf(first.id, "db-2"), resultOf(second.id, "db-2")]);
    const done = results.map((e) => {
      assert.equal(e.type, "done", JSON.stringify(e.payload));
      return (e.payload as { result: Done }).result;
    });
    assert.equal(done[0]!.snapshot, done[1]!.snapshot, "both name the same snapshot");
    assert.deepEqual(done.map((d) => Boolean(d.joined)).sort(), [false, true], "one took it, the other joined");
  });

  it("a drill restores the latest snapshot into a scratch server, compares every table's checksum, and records its RTO in S3", async () => {
    const snapshot = await backupOn("db-2", "logical");
    const drill = await operation(["backup", "drill", "--node", "db-2", "--snapshot", snapshot]);
    assert.equal(drill.code, 0, drill.stderr + drill.stdout);
    assert.ok(drill.done!.rtoMs! > 0);
    const shown = JSON.parse((await fleet.bosun(["backup", "show", snapshot, "--json"])).stdout) as { drills: { ok: boolean; rtoMs: number; tables: number; checksumsRecorded: boolean }[] };
    assert.equal(shown.drills.length, 1, "the drill's report is in S3");
    assert.equal(shown.drills[0]!.ok, true);
    assert.equal(shown.drills[0]!.rtoMs, drill.done!.rtoMs);
    assert.equal(shown.drills[0]!.checksumsRecorded, true);
    const physical = await backupOn("db-2", "physical");
    const latest = await operation(["backup", "drill"]);
    assert.equal(latest.code, 0, latest.stderr + latest.stdout);
    assert.equal(latest.done!.snapshot, physical, "without --snapshot, the latest complete snapshot is drilled");
  });

  it("a drill whose restored tables do not match the checksums the manifest records fails, naming the table, and its report in S3 says so", async () => {
    const snapshot = await backupOn("db-2", "logical");
    const manifest = await manifestOf(snapshot);
    // As if the snapshot tool had written other data than the server held: the node's own key re-signs a manifest with one checksum changed.
    const signer = (await NodeKeyring.open(fleet.stateDir("db-2"))).signer("db-2");
    const forged = signRecord(signer, "backup-manifest", { ...manifest, tables: { ...manifest.tables, "shop.customers": "12345" } });
    await store.put(backupKeys.manifest(snapshot), forged);
    await store.put(backupKeys.complete(snapshot), signRecord(signer, "backup-complete", { snapshot, manifestSha256: manifestDigest(forged), completedAt: new Date().toISOString() }));
    const drill = await operation(["backup", "drill", "--node", "db-2", "--snapshot", snapshot]);
    assert.equal(drill.code, 1, drill.stderr + drill.stdout);
    assert.match(drill.failed!.detail!, new RegExp(`snapshot ${snapshot} did not restore as it was taken: shop.customers checksum ${manifest.tables!["shop.customers"]} \\(recorded 12345\\)`));
    const shown = JSON.parse((await fleet.bosun(["backup", "show", snapshot, "--json"])).stdout) as { drills: { ok: boolean; mismatched: { table: string }[] }[] };
    assert.equal(shown.drills.length, 1, "the failed drill's report is in S3");
    assert.equal(shown.drills[0]!.ok, false);
    assert.deepEqual(shown.drills[0]!.mismatched.map((m) => m.table), ["shop.customers"]);
  });

  it("S3 failing mid-upload fails the backup with the reason, aborts the multipart upload, and leaves nothing that looks complete", async () => {
    proxy.reset();
    proxy.rule = (req) => (req.method === "PUT" && /[?&]partNumber=2(&|$)/.test(req.url) ? "fail" : "pass");
    try {
      const out = await operation(["backup", "now", "--node", "db-4", "--kind", "logical"]);
      assert.equal(out.code, 1);
      assert.match(out.failed!.detail!, /upload of s3:\/\/.*\/backups\/snapshots\/.*-db-4-logical-.* failed/);
    } finally {
      proxy.release();
    }
    assert.deepEqual(await pendingUploads(fleet.clients, `b-${fleet.cluster}`, backupKeys.snapshots), [], "no multipart upload left open");
    const list = JSON.parse((await fleet.bosun(["backup", "list", "--json"])).stdout) as { snapshot: string; status: string }[];
    assert.ok(!list.some((s) => s.snapshot.includes("-db-4-") && s.status === "complete"), "nothing from the failed backup is complete");
    const again = await backupOn("db-4", "logical");
    assert.match(again, /-db-4-logical-/, "the next backup runs: the lease was given up");
  });

  it("the database going away mid-dump fails the backup, naming the dump, and aborts the upload", async () => {
    const result = await backupBrokenMidUpload(async () => lone.kill());
    assert.equal(result.type, "failed");
    assert.match((result.payload as { error: string }).error, /mariadb-dump (exited|was killed)/);
    assert.deepEqual(await pendingUploads(fleet.clients, `b-${fleet.cluster}`, backupKeys.snapshots), []);
    lone = await MariaDb.run(lone.dir, lone.port, lone.serverId);
  });

  it("the compressor dying mid-backup fails the backup naming it (not the broken pipe it leaves), and aborts the upload", async () => {
    const result = await backupBrokenMidUpload(async () => {
      const { stdout } = await run("pgrep", ["-P", String(loneAgent.child.pid), "-x", "zstd"]);
      for (const pid of stdout.split("\n").filter(Boolean)) process.kill(Number(pid), "SIGKILL");
    });
    assert.equal(result.type, "failed");
    assert.match((result.payload as { error: string }).error, /zstd was killed by SIGKILL/);
    assert.deepEqual(await pendingUploads(fleet.clients, `b-${fleet.cluster}`, backupKeys.snapshots), []);
  });

  it("an agent killed mid-upload: its next run aborts the upload, gives up the lease and reports the backup failed; the next backup runs", async () => {
    proxy.reset();
    proxy.rule = (req) => (req.method === "PUT" && /[?&]partNumber=/.test(req.url) ? "hold" : "pass");
    const command = fleet.command("backup-now", { kind: "logical" }, { nodes: ["db-4"] });
    await fleet.publish(command);
    await proxy.waitFor((r) => r.action === "hold", "the first part of the upload");
    loneAgent.child.kill("SIGKILL");
    await loneAgent.exited;
    try {
      assert.equal((await pendingUploads(fleet.clients, `b-${fleet.cluster}`, backupKeys.snapshots)).length, 1, "the dead agent left its upload open");
      assert.match((await store.get<{ holder: string }>(stateKeys.lease("backup")))!.holder, /^db-4\//, "and the backup lease");
    } finally {
      proxy.release();
      loneAgent = await fleet.startAgent("db-4", ["db"], loneEnv());
    }
    const result = await resultOf(command.id, "db-4");
    assert.equal(result.type, "failed");
    assert.equal((result.payload as { code?: string }).code, "INTERRUPTED");
    await loneAgent.waitForLog((r) => r.msg === "aborted the upload of a backup an earlier run of this agent did not finish", "the orphan upload aborted");
    assert.deepEqual(await pendingUploads(fleet.clients, `b-${fleet.cluster}`, backupKeys.snapshots), []);
    await loneAgent.waitForLog((r) => r.msg === "gave up the backup lease an earlier run of this agent held", "the lease given up");
    assert.equal(await store.get(stateKeys.lease("backup")), undefined, "the lease the dead run held is given up");
    await backupOn("db-4", "logical");
  });

  it("an EBS snapshot is taken under a brief lock on the replica, tagged, and proven; on a primary it is refused; it cannot be restored as a stream", async () => {
    const snapshot = await backupOn("db-2", "ebs");
    const manifest = await manifestOf(snapshot);
    assert.equal(manifest.ebs?.volumeId, volumeId);
    assert.ok(typeof manifest.timings.lockMs === "number", "the time writes were blocked is recorded");
    const ec2 = new EC2Client({ endpoint: moto.endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" } });
    try {
      const found = await ec2.send(new DescribeSnapshotsCommand({ Filters: [{ Name: "tag:bosun:snapshot", Values: [snapshot] }] }));
      assert.equal(found.Snapshots?.[0]?.SnapshotId, manifest.ebs!.snapshotId);
      assert.equal(found.Snapshots?.[0]?.VolumeId, volumeId);
    } finally {
      ec2.destroy();
    }
    assert.equal((await fleet.bosun(["backup", "verify", snapshot], { AWS_ENDPOINT_URL_EC2: moto.endpoint })).code, 0);
    const onPrimary = await operation(["backup", "now", "--node", "db-1", "--kind", "ebs"]);
    assert.equal(onPrimary.code, 1);
    assert.match(onPrimary.failed!.detail!, /blocks writes: take it on a replica/);
    const restore = await operation(["restore", "--node", "db-3", "--snapshot", snapshot]);
    assert.equal(restore.code, 1);
    assert.match(restore.failed!.detail!, new RegExp(`EBS snapshot ${manifest.ebs!.snapshotId}: create a volume from it`));
  });

  it("a scheduled backup missed while no coordinator led is reported as an alert and taken at once", async () => {
    await coordinator.stop();
    const cron = "0 30 3 * * *";
    await store.put(stateKeys.schedule("backup"), { name: "backup", cron, nextRunAt: new Date(Date.now() - 3600_000).toISOString() });
    const scheduling = await fleet.startCoordinator({ BOSUN_BACKUPS: JSON.stringify({ schedule: cron, drillSchedule: "0 0 4 1 1 *" }) });
    try {
      const alert = await fleet.waitForEvent((e) => e.type === "alert" && (e.payload as { code: string }).code === "SCHEDULED_BACKUP_MISSED", "the missed-backup alert", 30_000);
      assert.match((alert.payload as { message: string }).message, /did not run: no coordinator was leading then; running it now/);
      const deadline = Date.now() + 120_000;
      for (;;) {
        const record = await store.get<{ outcome?: string; node?: string; commandId?: string }>(stateKeys.schedule("backup"));
        if (record?.outcome === "done") {
          assert.equal(record.node, "db-2", "the catch-up backup ran on the replica marked for backups");
          break;
        }
        assert.ok(Date.now() < deadline, `the catch-up backup did not finish: ${JSON.stringify(record)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await scheduling.stop();
      coordinator = await fleet.startCoordinator();
    }
  });

  it("prune keeps what retention and the restore window need, removes the rest from the bucket, and with --dry-run only says so", async () => {
    await backupOn("db-2", "logical");
    const newest = await backupOn("db-2", "logical");
    const retention = { BOSUN_BACKUPS: JSON.stringify({ retention: { hourly: 1, daily: 0, weekly: 0, monthly: 0, windowDays: 0 } }), AWS_ENDPOINT_URL_EC2: moto.endpoint };
    const dry = JSON.parse((await fleet.bosun(["backup", "prune", "--dry-run", "--json"], retention)).stdout) as { keep: { id: string }[]; remove: { id: string }[] };
    assert.deepEqual(dry.keep.map((k) => k.id), [newest], "only the newest complete snapshot is kept");
    assert.ok(dry.remove.length >= 1);
    const listed = async () => (JSON.parse((await fleet.bosun(["backup", "list", "--json"])).stdout) as { snapshot: string; status: string }[]).filter((s) => s.status === "complete").map((s) => s.snapshot);
    assert.ok((await listed()).length >= 2, "a dry run removes nothing");
    const pruned = await fleet.bosun(["backup", "prune", "--json"], retention);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.deepEqual(await listed(), [newest]);
  });
});
