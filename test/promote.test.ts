import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { NodeKeyDirectory, StateStore, binlogKeys, ensureTopic, listObjects, readPrimary } from "@bosun/aws";
import type { BinlogSegment, DbPrimary, Envelope } from "@bosun/core";
import { TestFleet } from "./helpers/fleet.ts";
import { MariaDb, mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { Moto, motoMissing } from "./helpers/moto.ts";

const missing = needs({ ...mariadbTools, "mariadb-binlog": "mariadb-client" }).skip || motoMissing();

/**
 * Promotion with real parts: a primary shipping its binary log, a restore of it to `latest` on
 * another server with --promote, and then the old primary, still running and still written to,
 * which must stop shipping, while the new primary ships under a history of its own.
 */
describe("db role: promotion after a point-in-time restore", { skip: missing ?? false }, () => {
  let moto: Moto;
  let fleet: TestFleet;
  let primary: MariaDb;
  let target: MariaDb;
  let store: StateStore;
  let bucket: string;

  const history = async (node: string) => {
    const record = JSON.parse(await readFile(join(fleet.stateDir(node), "db-server.json"), "utf8")) as { uuid: string; epoch: number };
    return `${record.uuid}-${record.epoch}`;
  };
  const lastSegment = async (server: string): Promise<BinlogSegment | undefined> => {
    const last = (await listObjects(fleet.clients, bucket, binlogKeys.index(server))).map((o) => o.key).sort().at(-1);
    return last ? ((await store.get<Envelope>(last))!.payload as BinlogSegment) : undefined;
  };
  const shippedTo = async (server: string, db: MariaDb) => {
    const [at] = await db.query<{ File: string; Position: number }[]>("SHOW MASTER STATUS");
    const deadline = Date.now() + 60_000;
    for (;;) {
      const s = await lastSegment(server);
      if (s && (s.file > at!.File || (s.file === at!.File && s.end >= Number(at!.Position)))) return;
      if (Date.now() > deadline) throw new Error(`${server} did not reach ${at!.File}:${at!.Position}; it ends at ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  before(async () => {
    moto = await Moto.start();
    fleet = await TestFleet.start({}, { s3Endpoint: moto.endpoint });
    bucket = `b-${fleet.cluster}`;
    store = new StateStore({ clients: fleet.clients }, { bucket });
    const started = await Promise.allSettled([
      MariaDb.start({ serverId: 41, name: "promote-old" }).then((s) => (primary = s)),
      MariaDb.start({ serverId: 42, name: "promote-new", controlled: true }).then((s) => (target = s)),
    ]);
    for (const outcome of started) if (outcome.status === "rejected") throw outcome.reason;
    const scratch = join(fleet.dir, "db-2-scratch");
    await mkdir(scratch, { recursive: true });
    const shipping = { enabled: "auto", intervalMs: 300 };
    await Promise.all([
      fleet.startAgent("db-1", ["db"], { BOSUN_HEARTBEAT_INTERVAL: "1", BOSUN_DB: JSON.stringify({ socket: primary.socket, user: "root", dataDir: primary.dataDir, backup: { kind: "logical" }, shipping }) }),
      fleet.startAgent("db-2", ["db"], { BOSUN_DB: JSON.stringify({ socket: target.socket, user: "root", dataDir: target.dataDir, ...target.controls, scratchDir: scratch, backup: { kind: "logical" }, shipping }) }),
    ]);
    await primary.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.t VALUES (1), (2)");
    const backup = await fleet.bosun(["backup", "now", "--node", "db-1", "--wait", "--json", "--timeout", "300"]);
    assert.equal(backup.code, 0, backup.stderr + backup.stdout);
    await primary.query("INSERT INTO app.t VALUES (3), (4)");
    await shippedTo(await history("db-1"), primary);
  });

  after(async () => {
    await fleet?.close();
    await moto?.stop();
    await Promise.allSettled([primary?.destroy(), target?.destroy()]);
  });

  it("--promote makes the restored node the primary: a signed record and an event name it, it ships under a new epoch, and the old primary stops shipping", async () => {
    const oldHistory = await history("db-1");
    const since = Date.now();
    const out = await fleet.bosun(["restore", "--node", "db-2", "--to", "latest", "--promote", "--wait", "--json", "--timeout", "300"]);
    assert.equal(out.code, 0, out.stderr + out.stdout);
    const result = (JSON.parse(out.stdout) as { result: { nodes: { result: { promoted: DbPrimary } }[] } }).result.nodes[0]!.result;
    assert.deepEqual((await target.query<{ id: number }[]>("SELECT id FROM app.t ORDER BY id")).map((r) => r.id), [1, 2, 3, 4]);

    const newHistory = await history("db-2");
    assert.equal(result.promoted.node, "db-2");
    assert.equal(result.promoted.server, newHistory);
    assert.equal(result.promoted.previous, undefined, "no promotion before this one");
    const event = await fleet.waitForEvent((e) => e.type === "db-primary" && (e.payload as { primary: DbPrimary }).primary.node === "db-2", "a db-primary event naming db-2");
    assert.equal((event.payload as { primary: DbPrimary }).primary.generation, 1);
    const keys = new NodeKeyDirectory({ store }, { topicArn: await ensureTopic(fleet.clients, fleet.cluster) });
    const record = await readPrimary({ store, keys });
    assert.ok(record.ok && record.primary?.node === "db-2" && record.primary.generation === 1, `the signed record names db-2: ${JSON.stringify(record)}`);

    // The new primary ships its writes under its new history.
    await target.query("INSERT INTO app.t VALUES (5)");
    await shippedTo(newHistory, target);
    assert.notEqual(newHistory, oldHistory);

    // The old primary, still up and written to, stops shipping and says so.
    const fenced = await fleet.waitForEvent(
      (e) => e.type === "alert" && Date.parse(e.issuedAt) >= since - 1000 && (e.payload as { code: string }).code === "DB_NOT_PRIMARY",
      "DB_NOT_PRIMARY from db-1",
      30_000,
    );
    assert.match((fenced.payload as { message: string }).message, /db-2 is the cluster's primary since .*: this server's binary log is no longer shipped/);
    const before = await lastSegment(oldHistory);
    await primary.query("INSERT INTO app.t VALUES (100)");
    // Several of the old shipper's passes (300 ms apart) go by while heartbeats (1 s) report it fenced; none ships the write.
    let reports = 0;
    await fleet.waitForEvent((e) => {
      const shipping = (e.payload as { node?: { id: string }; report?: { db?: { shipping?: { state: string } } } }).report?.db?.shipping;
      if (e.type === "heartbeat" && (e.payload as { node: { id: string } }).node.id === "db-1" && Date.parse(e.issuedAt) > since && shipping?.state === "fenced") reports += 1;
      return reports >= 3;
    }, "three heartbeats of db-1 reporting its shipping fenced", 30_000);
    assert.deepEqual(await lastSegment(oldHistory), before, "the old primary shipped nothing after the promotion");

    const status = JSON.parse((await fleet.bosun(["db", "status", "--json"])).stdout) as { primary?: string; promotion?: DbPrimary };
    assert.equal(status.primary, "db-2");
    assert.equal(status.promotion?.generation, 1);
  });
});
