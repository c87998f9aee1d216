import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { NodeKeyDirectory, ensureTopic, readPrimary, type StateStore } from "@bosun/aws";
import type { DbPrimary } from "@bosun/core";
import type { TestFleet } from "./helpers/fleet.ts";
import { MariaDb, mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { motoMissing } from "./helpers/moto.ts";
import { PitrBench } from "./helpers/pitr.ts";

const missing = needs({ ...mariadbTools, "mariadb-binlog": "mariadb-client" }).skip || motoMissing();

/**
 * Promotion with real parts: a primary shipping its binary log, a restore of it to `latest` on
 * another server with --promote, and then the old primary, still running and still written to,
 * which must stop shipping, while the new primary ships under a history of its own.
 */
describe("db role: promotion after a point-in-time restore", { skip: missing ?? false }, () => {
  const bench = new PitrBench();
  let fleet: TestFleet;
  let primary: MariaDb;
  let target: MariaDb;
  let store: StateStore;
  const history = (node: string) => bench.history(node);
  const lastSegment = (server: string) => bench.lastSegment(server);
  const shippedTo = (server: string, db: MariaDb) => bench.shippedTo(server, db);

  before(async () => {
    const shipping = { enabled: "auto", intervalMs: 300 };
    await bench.start({ name: "promote", serverIds: [41, 42], env: { BOSUN_HEARTBEAT_INTERVAL: "1" }, db1: { shipping }, db2: { shipping } });
    ({ fleet, store, primary, target } = bench);
    await primary.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.t VALUES (1), (2)");
    const backup = await fleet.bosun(["backup", "now", "--node", "db-1", "--wait", "--json", "--timeout", "300"]);
    assert.equal(backup.code, 0, backup.stderr + backup.stdout);
    await primary.query("INSERT INTO app.t VALUES (3), (4)");
    await shippedTo(await history("db-1"), primary);
  });

  after(() => bench.close());

  it("--promote makes the restored node the primary: a signed record and an event name it, it ships under a new epoch, and the old primary stops shipping", async () => {
    const oldHistory = await history("db-1");
    const gtidPos = async (db: MariaDb) => (await db.query<{ pos: string }[]>("SELECT @@gtid_binlog_pos AS pos"))[0]!.pos;
    const replayedTo = await gtidPos(primary);
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
    // The replayed transactions are in its binary log with their GTIDs: its own go on after them.
    const [, , oldSeq] = replayedTo.split("-");
    const [, server, newSeq] = (await gtidPos(target)).split("-");
    assert.equal(server, "42");
    assert.equal(Number(newSeq), Number(oldSeq) + 1, `the new primary's first transaction follows ${replayedTo}`);
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
