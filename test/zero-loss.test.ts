import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Connection } from "mysql2/promise";
import { PitrBench } from "./helpers/pitr.ts";
import { mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { motoMissing } from "./helpers/moto.ts";
import { S3Proxy } from "./helpers/s3-proxy.ts";

const missing = needs(mariadbTools).skip || motoMissing();

/**
 * Zero-loss mode with real parts: a primary whose agent is a semi-synchronous replica of it and
 * acknowledges commits only once they are in S3 (moto, through a proxy the test can stall).
 */
describe("db role: zero-loss mode", { skip: missing ?? false }, () => {
  const bench = new PitrBench();
  let proxy: S3Proxy;
  let server: string;
  const TIMEOUT_MS = 3000;

  /** The primary's status counters: commits acknowledged by a semi-synchronous replica, and those that went on without one. */
  const counters = async () => {
    const rows = await bench.primary.query<{ Variable_name: string; Value: string }[]>("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%_tx'");
    const get = (name: string) => Number(rows.find((r) => r.Variable_name === name)?.Value ?? Number.NaN);
    return { yes: get("Rpl_semi_sync_master_yes_tx"), no: get("Rpl_semi_sync_master_no_tx") };
  };
  const position = async (c: Connection) => {
    const [[status]] = (await c.query("SHOW MASTER STATUS")) as unknown as [[{ File: string; Position: number }]];
    return { File: status.File, Position: Number(status.Position) };
  };

  before(async () => {
    await bench.start({
      name: "zero-loss",
      serverIds: [61, 62],
      db1: { shipping: { enabled: "auto", intervalMs: 1000, zeroLoss: { enabled: true, timeoutMs: TIMEOUT_MS } } },
      db2: { shipping: { enabled: "off" } },
      beforeAgents: async (moto) => {
        proxy = await S3Proxy.start(moto.endpoint);
        return { db1: { AWS_ENDPOINT_URL_S3: proxy.endpoint } };
      },
    });
    server = await bench.history("db-1");
    await bench.primary.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");
    // Until the agent's replication connection is up, commits wait out the timeout: wait for one acknowledged commit.
    const deadline = Date.now() + 60_000;
    for (let id = -1; (await counters()).yes < 1; id--) {
      if (Date.now() > deadline) throw new Error("no commit was ever acknowledged by the agent");
      await bench.primary.query("INSERT INTO app.t VALUES (?)", [id]);
    }
  });

  after(async () => {
    await bench.close();
    await proxy?.close();
  });

  it("a commit returns only once the segment holding it is in S3: every acknowledged commit is already in the archive", async () => {
    const c = await bench.primary.connect();
    const latencies: number[] = [];
    try {
      const before = await counters();
      for (let id = 1; id <= 20; id++) {
        const started = Date.now();
        await c.query("INSERT INTO app.t VALUES (?)", [id]);
        latencies.push(Date.now() - started);
        const at = await position(c);
        const last = await bench.lastSegment(server);
        assert.ok(last && (last.file > at.File || (last.file === at.File && last.end >= at.Position)), `commit ${id} (to ${at.File}:${at.Position}) returned before the archive held it: it ends at ${last?.file}:${last?.end}`);
      }
      const after = await counters();
      assert.equal(after.no - before.no, 0, "no commit went on without an acknowledgement");
      assert.ok(after.yes - before.yes >= 20, "every commit was acknowledged");
    } finally {
      await c.end();
    }
    latencies.sort((a, b) => a - b);
    console.log(`zero-loss commit latency (ms, sorted): ${latencies.join(", ")}`);
  });

  it("S3 slower than the timeout: the server goes on without waiting, the agent says so, and says so again once commits wait once more", async () => {
    const since = Date.now();
    const alert = (code: string) =>
      bench.fleet.waitForEvent((e) => e.type === "alert" && Date.parse(e.issuedAt) >= since - 1000 && (e.payload as { code: string }).code === code, `an alert ${code}`, 60_000);
    proxy.rule = (r) => (r.method === "PUT" && r.url.includes("/backups/binlog/") ? "fail" : "pass");
    const suspended = alert("ZERO_LOSS_SUSPENDED");
    try {
      const started = Date.now();
      await bench.primary.query("INSERT INTO app.t VALUES (1000)");
      const waited = Date.now() - started;
      assert.ok(waited >= TIMEOUT_MS - 200, `the commit waited for the timeout (${waited} ms)`);
      assert.match(((await suspended).payload as { message: string }).message, /zero-loss mode is suspended: the server stopped waiting after 3000 ms/);
    } finally {
      proxy.release();
    }
    await alert("ZERO_LOSS_RESUMED");
    // Waiting again: the next commit is in S3 when it returns.
    const c = await bench.primary.connect();
    try {
      await c.query("INSERT INTO app.t VALUES (1001)");
      const at = await position(c);
      const last = await bench.lastSegment(server);
      assert.ok(last && (last.file > at.File || (last.file === at.File && last.end >= at.Position)), "the commit after the outage is in the archive when it returns");
    } finally {
      await c.end();
    }
  });
});
