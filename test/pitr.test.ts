import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import type { RecoveryPlan } from "@bosun/aws";
import type { TestFleet } from "./helpers/fleet.ts";
import { MariaDb, mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { motoMissing } from "./helpers/moto.ts";
import { PitrBench } from "./helpers/pitr.ts";

// A missing MariaDB tool fails the file, naming its package (.ci/run installs them); moto, which Debian does not package, skips it saying how to install it.
const missing = needs({ ...mariadbTools, "mariadb-binlog": "mariadb-client" }).skip || motoMissing();

interface Reached {
  file: string;
  position: number;
  gtid: string;
  transactions: number;
}

/**
 * Point-in-time restore with real parts: a primary mariadbd whose agent ships its binary log to
 * S3 (moto), a logical snapshot taken by that agent, rows written after it, a DROP TABLE by
 * mistake and rows written after that; then `bosun restore --to` onto a fresh server through
 * its own agent, and the fresh server's rows compared with what the primary committed.
 */
describe("db role: point-in-time restore", { skip: missing ?? false }, () => {
  const bench = new PitrBench();
  let fleet: TestFleet;
  let primary: MariaDb;
  let target: MariaDb;
  let bucket: string;
  let server: string;
  let snapshot: string;
  /** The GTID of the DROP TABLE, the position it starts at, and the GTID position just before it. */
  let drop: { gtid: string; file: string; position: number; before: string };

  const written = async () => (await primary.query<{ File: string; Position: number }[]>("SHOW MASTER STATUS"))[0]!;
  const gtidPos = async () => (await primary.query<{ pos: string }[]>("SELECT @@gtid_binlog_pos AS pos"))[0]!.pos;

  /** Waits until the archive holds the primary's binary log up to where it stands now. */
  const shipped = () => bench.shippedTo(server, primary);

  const orders = async (db: MariaDb) => (await db.query<{ id: number }[]>("SELECT id FROM app.orders ORDER BY id")).map((r) => r.id);
  const audit = async (db: MariaDb) => (await db.query<{ id: number }[]>("SELECT id FROM app.audit ORDER BY id")).map((r) => r.id);
  const tableExists = async (db: MariaDb, table: string) =>
    (await db.query<{ n: number }[]>("SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = ?", [table]))[0]!.n === 1;

  /** A table only the restore target has: a refused restore must leave it, and the server, as they were. */
  const markTarget = async () => {
    await target.query("CREATE DATABASE IF NOT EXISTS marker; CREATE TABLE IF NOT EXISTS marker.t (x INT); DELETE FROM marker.t; INSERT INTO marker.t VALUES (42)");
  };
  const assertTargetUntouched = async (why: string) => {
    assert.ok(target.running, `${why}: the server is still running`);
    assert.deepEqual((await target.query<{ x: number }[]>("SELECT x FROM marker.t")).map((r) => r.x), [42], `${why}: the server's data was not touched`);
  };

  /** `bosun restore --node db-2 ARGS --wait --json`: the exit code and db-2's result or failure. */
  const restore = async (args: string[]) => {
    const out = await fleet.bosun(["restore", "--node", "db-2", ...args, "--wait", "--json", "--timeout", "300"]);
    const parsed = JSON.parse(out.stdout || "{}") as { result?: { nodes: { state: string; result?: { reached: Reached; snapshot: string }; detail?: string }[] } };
    return { ...out, node: parsed.result?.nodes[0] };
  };

  const objectBytes = async (key: string): Promise<Buffer> => Buffer.from(await (await fleet.clients.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
  const putBytes = (key: string, body: Buffer) => fleet.clients.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));

  before(async () => {
    await bench.start({ name: "pitr", serverIds: [31, 32], coordinator: true, env: { BOSUN_HEARTBEAT_INTERVAL: "1" }, db1: { shipping: { enabled: "auto", intervalMs: 500 } }, db2: { shipping: { enabled: "off" } } });
    ({ fleet, bucket, primary, target } = bench);
    await primary.query("CREATE DATABASE app; CREATE TABLE app.orders (id INT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB; CREATE TABLE app.audit (id INT PRIMARY KEY) ENGINE=InnoDB");
    for (let i = 1; i <= 50; i++) await primary.query("INSERT INTO app.orders VALUES (?, 'before the snapshot')", [i]);
    const backup = await fleet.bosun(["backup", "now", "--node", "db-1", "--wait", "--json", "--timeout", "300"]);
    assert.equal(backup.code, 0, backup.stderr + backup.stdout);
    snapshot = (JSON.parse(backup.stdout) as { result: { nodes: { result: { snapshot: string } }[] } }).result.nodes[0]!.result.snapshot;
    // Rows after the snapshot, a rotation, more rows: the replay crosses a file boundary.
    for (let i = 51; i <= 70; i++) await primary.query("INSERT INTO app.orders VALUES (?, 'after the snapshot')", [i]);
    await primary.query("FLUSH BINARY LOGS");
    for (let i = 71; i <= 80; i++) await primary.query("INSERT INTO app.orders VALUES (?, 'after the rotation')", [i]);
    const at = await written();
    const before = await gtidPos();
    await primary.query("DROP TABLE app.orders");
    const after = await gtidPos();
    drop = { gtid: after, file: at.File, position: Number(at.Position), before };
    for (let i = 1; i <= 5; i++) await primary.query("INSERT INTO app.audit VALUES (?)", [i]);
    server = await bench.history("db-1");
    await shipped();
  });

  after(() => bench.close());

  it("--dry-run prints the plan from the index: the snapshot, the segments from its coordinates to the target, the bytes and an estimate", async () => {
    const out = await fleet.bosun(["restore", "--node", "db-2", "--to", drop.gtid, "--dry-run", "--json"]);
    assert.equal(out.code, 0, out.stderr);
    const plan = JSON.parse(out.stdout) as RecoveryPlan;
    assert.equal(plan.snapshot.id, snapshot);
    assert.equal(plan.server, server);
    assert.ok(plan.segments.length >= 2, "segments of two files at least: the replay crosses the rotation");
    assert.equal(new Set(plan.segments.map((s) => s.file)).size, 2);
    const first = plan.segments[0]!;
    assert.ok(first.file === plan.snapshot.coordinates.file && first.start <= plan.snapshot.coordinates.position && plan.snapshot.coordinates.position <= first.end, "the first segment holds the snapshot's coordinates");
    assert.ok(plan.segments.at(-1)!.gtids?.["0"], "the last segment carries GTIDs");
    assert.equal(plan.binlogBytes, [...plan.headers, ...plan.segments].reduce((sum, s) => sum + s.bytes, 0));
    assert.ok(plan.estimate.seconds >= 1);
    const text = await fleet.bosun(["restore", "--node", "db-2", "--to", drop.gtid, "--dry-run"]);
    assert.match(text.stdout, new RegExp(`snapshot +${snapshot}`));
    assert.match(text.stdout, /estimate +about \d+ s/);
  });

  it("restores onto a fresh server to just before the DROP TABLE: every row committed before it, nothing after", async () => {
    const out = await restore(["--to", drop.gtid]);
    assert.equal(out.code, 0, out.stderr + out.stdout);
    assert.equal(out.node?.state, "done", JSON.stringify(out.node));
    assert.equal(out.node!.result!.snapshot, snapshot);
    assert.deepEqual(await orders(target), Array.from({ length: 80 }, (_, i) => i + 1), "the dropped table is back with all 80 rows committed before the DROP");
    assert.deepEqual(await audit(target), [], "nothing committed after the DROP");
    assert.equal(out.node!.result!.reached.gtid, drop.before, "the data stands at the GTID position just before the DROP");
    assert.deepEqual({ file: out.node!.result!.reached.file, position: out.node!.result!.reached.position }, { file: drop.file, position: drop.position });
    const [slave] = await target.query<{ pos: string }[]>("SELECT @@gtid_slave_pos AS pos");
    assert.equal(slave!.pos, drop.before, "the server records where its data stands");
  });

  it("a FILE:POSITION target stops at the transaction there; latest replays every whole transaction shipped", async () => {
    const at = await restore(["--to", `${drop.file}:${drop.position}`]);
    assert.equal(at.code, 0, at.stderr + at.stdout);
    assert.equal((await orders(target)).length, 80, "to the DROP's position: the table and its 80 rows");
    assert.deepEqual(await audit(target), []);
    const latest = await restore(["--to", "latest"]);
    assert.equal(latest.code, 0, latest.stderr + latest.stdout);
    assert.equal(await tableExists(target, "orders"), false, "latest includes the DROP");
    assert.deepEqual(await audit(target), [1, 2, 3, 4, 5], "and every row after it");
    assert.equal(latest.node!.result!.reached.gtid, await gtidPos());
  });

  it("refuses, naming the problem, before anything is sent: a target older than every snapshot, one past the archive's end, a malformed one, --to with --replica-of", async () => {
    const old = await fleet.bosun(["restore", "--node", "db-2", "--to", "2020-01-01T00:00:00Z", "--dry-run"]);
    assert.notEqual(old.code, 0);
    assert.match(old.stderr, /2020-01-01T00:00:00Z is older than every snapshot: the oldest complete one, .* stands at/);
    const future = await fleet.bosun(["restore", "--node", "db-2", "--to", "0-31-999999", "--dry-run"]);
    assert.notEqual(future.code, 0);
    assert.match(future.stderr, /the archive ends before 0-31-999999: its last segment, \d+, ends at binlog\.\d+:\d+ .*use --to latest/);
    const bad = await fleet.bosun(["restore", "--node", "db-2", "--to", "yesterday"]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--to: expected an RFC 3339 time with its offset .* got "yesterday"/);
    const both = await fleet.bosun(["restore", "--node", "db-2", "--to", "latest", "--replica-of", "127.0.0.1:3306"]);
    assert.notEqual(both.code, 0);
    assert.match(both.stderr, /--to and --replica-of cannot be combined/);
  });

  it("a primary killed under load: a restore to latest on a fresh server holds every commit the archive held before the kill, as an unbroken prefix of what the client saw acknowledged", async () => {
    const killed = await MariaDb.start({ serverId: 33, name: "pitr-killed" });
    const agent = await fleet.startAgent("db-3", ["db"], {
      BOSUN_DB: JSON.stringify({ socket: killed.socket, user: "root", dataDir: killed.dataDir, backup: { kind: "logical" }, shipping: { enabled: "auto", intervalMs: 300 } }),
    });
    const load = { acked: [] as number[], attempted: 0, running: true, done: Promise.resolve() };
    try {
      await killed.query("CREATE DATABASE ledger; CREATE TABLE ledger.t (id INT PRIMARY KEY, data VARBINARY(512)) ENGINE=InnoDB");
      const backup = await fleet.bosun(["backup", "now", "--node", "db-3", "--wait", "--json", "--timeout", "300"]);
      assert.equal(backup.code, 0, backup.stderr + backup.stdout);
      const killedSnapshot = (JSON.parse(backup.stdout) as { result: { nodes: { result: { snapshot: string } }[] } }).result.nodes[0]!.result.snapshot;
      const killedServer = await bench.history("db-3");
      // One client, one commit at a time: what it saw acknowledged is a prefix 1..n.
      load.done = (async () => {
        const c = await killed.connect();
        try {
          while (load.running) {
            const id = ++load.attempted;
            await c.query("INSERT INTO ledger.t VALUES (?, REPEAT('x', 400))", [id]);
            load.acked.push(id);
          }
        } catch {
          // The server was killed under it.
        } finally {
          c.destroy();
        }
      })();
      const waitFor = async (what: string, check: () => Promise<boolean> | boolean) => {
        const deadline = Date.now() + 60_000;
        while (!(await check())) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      await waitFor("100 commits", () => load.acked.length >= 100);
      // Every commit acknowledged by now is in the binary log up to this position: wait until the archive holds it.
      const heldBefore = load.acked.length;
      await bench.shippedTo(killedServer, killed);
      await waitFor("more commits after that", () => load.acked.length >= heldBefore + 50);
      killed.kill();
      load.running = false;
      await load.done;
      const out = await restore(["--snapshot", killedSnapshot, "--to", "latest"]);
      assert.equal(out.code, 0, out.stderr + out.stdout);
      const restored = (await target.query<{ id: number }[]>("SELECT id FROM ledger.t ORDER BY id")).map((r) => r.id);
      console.log(`killed under load: ${load.acked.length} commits acknowledged, ${load.attempted} attempted; ${restored.length} restored (${load.acked.length - restored.length} acknowledged commits were not yet shipped)`);
      assert.deepEqual(restored, Array.from({ length: restored.length }, (_, i) => i + 1), "an unbroken prefix: no hole, no half transaction");
      assert.ok(restored.length >= heldBefore, `every commit the archive held before the kill is back (${restored.length} ≥ ${heldBefore})`);
      assert.ok(restored.length <= load.attempted, "nothing that was never written");
    } finally {
      load.running = false;
      await load.done;
      agent.child.kill("SIGTERM");
      await agent.exited;
      await killed.destroy();
    }
  });

  it("a replica's agent raises an alert when its lag passes the threshold, when it is healthy again and when a thread stops; bosun db status shows the cluster", async () => {
    const replica = await MariaDb.start({ serverId: 34, name: "pitr-replica" });
    try {
      await replica.replicate(primary);
      await replica.query("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE");
      const since = Date.now();
      const alert = (code: string) =>
        fleet.waitForEvent((e) => e.type === "alert" && Date.parse(e.issuedAt) >= since - 1000 && (e.payload as { code?: string; node?: { id: string } }).code === code && (e.payload as { node: { id: string } }).node.id === "db-4", `an alert ${code} from db-4`, 60_000);
      await fleet.startAgent("db-4", ["db"], {
        BOSUN_HEARTBEAT_INTERVAL: "1",
        BOSUN_DB: JSON.stringify({ socket: replica.socket, user: "root", dataDir: replica.dataDir, shipping: { enabled: "off" }, health: { intervalSeconds: 1, lagAlertSeconds: 1 } }),
      });
      const lagging = alert("REPLICATION_LAGGING");
      await primary.query("INSERT INTO app.audit VALUES (1000)");
      assert.match(((await lagging).payload as { message: string }).message, /replication on db-4 is \d+ s behind its primary \(alert above 1 s\)/);
      await alert("REPLICATION_HEALTHY");
      await primary.query("DELETE FROM app.audit WHERE id = 1000");
      const stopped = alert("REPLICATION_STOPPED");
      await replica.query("STOP SLAVE SQL_THREAD");
      assert.match(((await stopped).payload as { message: string }).message, /replication on db-4 stopped: IO thread running, SQL thread stopped/);

      type Status = { primary?: string; nodes: { node: string; role: string; replication?: { sql: boolean } }[]; shippingLag?: { behindSeconds: number; secondsSinceLastSegment?: number }; latestSnapshot?: { id: string }; oldestRestorePoint?: { snapshot: string } };
      let status: Status | undefined;
      const deadline = Date.now() + 60_000;
      while (!(status?.nodes.some((n) => n.node === "db-4" && n.replication?.sql === false) && status.shippingLag)) {
        if (Date.now() > deadline) throw new Error(`bosun db status never showed db-4's stopped SQL thread: ${JSON.stringify(status)}`);
        const out = await fleet.bosun(["db", "status", "--json"]);
        assert.equal(out.code, 0, out.stderr);
        status = JSON.parse(out.stdout) as Status;
      }
      assert.equal(status.primary, "db-1");
      assert.equal(status.nodes.find((n) => n.node === "db-4")!.role, "replica");
      assert.equal(typeof status.shippingLag!.behindSeconds, "number");
      assert.ok(status.latestSnapshot && status.oldestRestorePoint, "the latest snapshot and the oldest restore point");
      const text = await fleet.bosun(["db", "status"]);
      assert.match(text.stdout, /Primary: db-1/);
      assert.match(text.stdout, /Shipping lag: \d+ s behind the primary's server; last durable segment \d+ s ago/);
      assert.match(text.stdout, /db-4 .* replica .* io yes, sql NO/);
      assert.match(text.stdout, /Oldest point a restore can reach: /);
    } finally {
      const agent = fleet.processes.find((p) => p.name === "db-4");
      agent?.child.kill("SIGTERM");
      await agent?.exited;
      await replica.destroy();
    }
  });

  it("a segment with one flipped byte or of another size is refused on the node before its server is touched; a missing one is refused by the plan", async () => {
    const plan = JSON.parse((await fleet.bosun(["restore", "--node", "db-2", "--to", drop.gtid, "--dry-run", "--json"])).stdout) as RecoveryPlan;
    const victim = plan.segments.at(-1)!;
    const original = await objectBytes(victim.key);
    await markTarget();
    try {
      const flipped = Buffer.from(original);
      flipped[Math.floor(flipped.length / 2)]! ^= 0x01;
      await putBytes(victim.key, flipped);
      const out = await restore(["--to", drop.gtid]);
      assert.equal(out.code, 1);
      assert.equal(out.node?.state, "failed");
      assert.match(out.node?.detail ?? "", new RegExp(`BINLOG_SEGMENT_CORRUPT|segment ${victim.seq} \\(.*\\) does not match its index entry: .*nothing was touched`));
      await assertTargetUntouched("a corrupt segment");

      // A segment of another size is refused before it is read.
      await putBytes(victim.key, Buffer.concat([original, Buffer.from([0])]));
      const longer = await restore(["--to", drop.gtid]);
      assert.equal(longer.node?.state, "failed");
      assert.match(longer.node?.detail ?? "", new RegExp(`segment ${victim.seq} \\(.*\\) holds ${original.length + 1} bytes; its index entry records ${original.length}: nothing was touched`));
      await assertTargetUntouched("a segment of another size");

      await fleet.clients.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: victim.key }));
      const gone = await fleet.bosun(["restore", "--node", "db-2", "--to", drop.gtid, "--wait"]);
      assert.notEqual(gone.code, 0);
      assert.match(gone.stderr, new RegExp(`segment ${victim.seq}: .* is missing`));
      await assertTargetUntouched("a missing segment");
    } finally {
      await putBytes(victim.key, original);
    }
  });
});
