import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { StateStore, binlogKeys, listObjects } from "@bosun/aws";
import type { BinlogSegment, Envelope } from "@bosun/core";
import { TestFleet } from "./fleet.ts";
import { MariaDb } from "./mariadb.ts";
import { Moto } from "./moto.ts";

/**
 * What point-in-time tests stand on: moto for S3, a fleet, a primary mariadbd whose agent (db-1)
 * ships its binary log, and a fresh server (db-2, stopped and started through its agent's
 * commands) to restore into. Assigned as each part starts, so `close` stops whatever did.
 */
export class PitrBench {
  moto!: Moto;
  fleet!: TestFleet;
  store!: StateStore;
  bucket!: string;
  primary!: MariaDb;
  target!: MariaDb;

  async start(options: {
    name: string;
    serverIds: [number, number];
    coordinator?: boolean;
    db1?: Record<string, unknown>;
    db2?: Record<string, unknown>;
    env?: Record<string, string>;
    /** Runs once moto is up, before the agents start: environment of each agent's own (an S3 proxy's endpoint). */
    beforeAgents?: (moto: Moto) => Promise<{ db1?: Record<string, string>; db2?: Record<string, string> }>;
  }): Promise<this> {
    this.moto = await Moto.start();
    this.fleet = await TestFleet.start({}, { s3Endpoint: this.moto.endpoint });
    this.bucket = `b-${this.fleet.cluster}`;
    this.store = new StateStore({ clients: this.fleet.clients }, { bucket: this.bucket });
    const started = await Promise.allSettled([
      MariaDb.start({ serverId: options.serverIds[0], name: `${options.name}-primary` }).then((s) => (this.primary = s)),
      MariaDb.start({ serverId: options.serverIds[1], name: `${options.name}-target`, controlled: true }).then((s) => (this.target = s)),
    ]);
    for (const outcome of started) if (outcome.status === "rejected") throw outcome.reason;
    const scratch = join(this.fleet.dir, "db-2-scratch");
    await mkdir(scratch, { recursive: true });
    const env = options.env ?? {};
    const own = (await options.beforeAgents?.(this.moto)) ?? {};
    await Promise.all([
      ...(options.coordinator ? [this.fleet.startCoordinator()] : []),
      this.fleet.startAgent("db-1", ["db"], { ...env, ...own.db1, BOSUN_DB: JSON.stringify({ socket: this.primary.socket, user: "root", dataDir: this.primary.dataDir, backup: { kind: "logical" }, ...options.db1 }) }),
      this.fleet.startAgent("db-2", ["db"], {
        ...env,
        ...own.db2,
        BOSUN_DB: JSON.stringify({ socket: this.target.socket, user: "root", dataDir: this.target.dataDir, ...this.target.controls, scratchDir: scratch, backup: { kind: "logical" }, ...options.db2 }),
      }),
    ]);
    return this;
  }

  async close(): Promise<void> {
    await this.fleet?.close();
    await this.moto?.stop();
    await Promise.allSettled([this.primary?.destroy(), this.target?.destroy()]);
  }

  /** The history ("<uuid>-<epoch>") a node's agent ships under now. */
  async history(node: string): Promise<string> {
    const record = JSON.parse(await readFile(join(this.fleet.stateDir(node), "db-server.json"), "utf8")) as { uuid: string; epoch: number };
    return `${record.uuid}-${record.epoch}`;
  }

  /** A history's index as S3 has it, in order. */
  async index(server: string): Promise<BinlogSegment[]> {
    const entries = await listObjects(this.fleet.clients, this.bucket, binlogKeys.index(server));
    const out: BinlogSegment[] = [];
    for (const e of entries.sort((a, b) => a.key.localeCompare(b.key))) out.push((await this.store.get<Envelope>(e.key))!.payload as BinlogSegment);
    return out;
  }

  async lastSegment(server: string): Promise<BinlogSegment | undefined> {
    const last = (await listObjects(this.fleet.clients, this.bucket, binlogKeys.index(server))).map((o) => o.key).sort().at(-1);
    return last ? ((await this.store.get<Envelope>(last))!.payload as BinlogSegment) : undefined;
  }

  /** Waits until a history holds `db`'s binary log up to where it stands now (or `at`). */
  async shippedTo(server: string, db: MariaDb, at?: { File: string; Position: number }, timeoutMs = 60_000): Promise<void> {
    const to = at ?? (await db.query<{ File: string; Position: number }[]>("SHOW MASTER STATUS"))[0]!;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.lastSegment(server);
      if (s && (s.file > to.File || (s.file === to.File && s.end >= Number(to.Position)))) return;
      if (Date.now() > deadline) throw new Error(`${server} did not reach ${to.File}:${to.Position}; it ends at ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
