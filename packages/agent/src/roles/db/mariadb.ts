import { createHash, randomUUID } from "node:crypto";
import { chown, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import { createConnection, type Connection } from "mysql2/promise";
import type { Coordinates, DbSettings, Logger } from "@bosun/core";
import { createFileDurably, writeFileDurably } from "../../durable.ts";
import type { BinaryLogs, DatabaseEngine, ScratchServer, ServerInfo, SnapshotRun } from "./engine.ts";
import { ToolError, runTool, toolOutput } from "./tool.ts";
import { walkTree } from "../web/tree.ts";

/** Schemas that belong to the server, not to its users: never dumped, never checksummed. */
const systemSchemas = ["mysql", "sys", "performance_schema", "information_schema"];

/**
 * MariaDB (and MySQL) through mysql2 for queries and its own tools for the heavy work:
 * mariadb-dump for logical snapshots, mariabackup and mbstream for physical ones, the mariadb
 * client to load a dump. Tools get argument arrays, and the password through an options file
 * (0600) named first on their command line.
 */
export class MariaDbEngine implements DatabaseEngine {
  readonly #log: Logger;
  readonly #db: DbSettings;
  readonly #stateDir: string;
  /** A backup stopped the replica's SQL thread on purpose: health checks do not call that a failure. */
  #pausedForBackup = false;

  constructor(deps: { logger: Logger }, options: { db: DbSettings; stateDir: string }) {
    this.#log = deps.logger;
    this.#db = options.db;
    this.#stateDir = options.stateDir;
  }

  async describe(): Promise<ServerInfo> {
    return this.#with(async (c) => {
      const [[vars]] = (await c.query("SELECT @@server_id AS id, @@version AS version")) as unknown as [[{ id: number; version: string }]];
      const replica = await this.#replicaStatus(c);
      return {
        id: Number(vars.id),
        uuid: await this.#serverUuid(),
        version: vars.version,
        role: replica ? "replica" : "primary",
        ...(replica
          ? {
              replication: {
                io: replica.Slave_IO_Running === "Yes",
                sql: replica.Slave_SQL_Running === "Yes",
                lagSeconds: replica.Seconds_Behind_Master === null ? null : Number(replica.Seconds_Behind_Master),
                ...(this.#pausedForBackup ? { pausedForBackup: true } : {}),
              },
            }
          : {}),
      };
    });
  }

  async archiveName(): Promise<{ uuid: string; epoch: number }> {
    // Read every second by the shipper: made (and synced) only the first time.
    const path = join(this.#stateDir, "db-server.json");
    const text = await readFile(path, "utf8").catch(async () => (await this.#serverUuid(), readFile(path, "utf8")));
    const { uuid, epoch } = JSON.parse(text) as { uuid: string; epoch: number };
    return { uuid, epoch };
  }

  async binaryLogs(written?: { file: string; position: number }): Promise<BinaryLogs | undefined> {
    return this.#with(async (c) => {
      const [[vars]] = (await c.query("SELECT @@log_bin AS enabled, @@log_bin_basename AS base, @@log_bin_index AS list")) as unknown as [[{ enabled: number; base: string | null; list: string | null }]];
      if (!Number(vars.enabled) || !vars.base) return undefined;
      const dir = dirname(vars.base);
      // SHOW BINARY LOGS and SHOW MASTER STATUS wait behind commits that wait for a semi-synchronous acknowledgement:
      // when the caller knows how far the server has written, the file list comes from the server's index file instead.
      const names = written && vars.list ? await binlogIndexFile(vars.list) : ((await c.query("SHOW BINARY LOGS")) as unknown as [{ Log_name: string }[]])[0].map((l) => l.Log_name);
      // Read after the list: a file the list does not have yet is one the server rotated to in between.
      const [[master]] = written
        ? [[{ File: written.file, Position: written.position }]]
        : ((await c.query("SHOW MASTER STATUS")) as unknown as [[{ File: string; Position: number | string }]]);
      return {
        replica: (await this.#replicaStatus(c)) !== undefined,
        files: names.map((name) => ({ name, path: join(dir, name) })),
        written: { file: master.File, position: Number(master.Position) },
      };
    });
  }

  /** Zero-loss mode: commits wait (after the binary log is synced) for a semi-synchronous replica's acknowledgement, for up to `timeoutMs`. */
  async enableSemiSync(timeoutMs: number): Promise<void> {
    await this.#with(async (c) => {
      await c.query("SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'");
      await c.query("SET GLOBAL rpl_semi_sync_master_timeout = ?", [timeoutMs]);
      await c.query("SET GLOBAL rpl_semi_sync_master_enabled = ON");
    });
  }

  async semiSyncActive(): Promise<boolean> {
    return this.#with(async (c) => {
      const [[row]] = (await c.query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")) as unknown as [[{ Value: string } | undefined]];
      return row?.Value === "ON";
    });
  }

  /** Where the server's binary log ends (SHOW MASTER STATUS). */
  async written(): Promise<{ file: string; position: number }> {
    return this.#with(async (c) => {
      const [[master]] = (await c.query("SHOW MASTER STATUS")) as unknown as [[{ File: string; Position: number | string }]];
      return { file: master.File, position: Number(master.Position) };
    });
  }

  /** How a replication connection reaches this server: the agent's own account (it needs REPLICATION SLAVE). */
  async replicationLogin(): Promise<{ socket?: string; host: string; port: number; user: string; password: string }> {
    return { ...(this.#db.socket ? { socket: this.#db.socket } : {}), host: this.#db.host, port: this.#db.port, user: this.#db.user, password: await this.#password() };
  }

  async pauseReplica(): Promise<Coordinates> {
    this.#pausedForBackup = true;
    return this.#with(async (c) => {
      await c.query("STOP SLAVE SQL_THREAD");
      // STOP returns before the thread has stopped; the coordinates only hold once it has.
      for (let i = 0; ; i++) {
        const status = await this.#replicaStatus(c);
        if (!status) throw new ToolError("NOT_A_REPLICA", "this server is not a replica: there is no replication to pause");
        if (status.Slave_SQL_Running === "No") {
          const [[pos]] = (await c.query("SELECT @@gtid_slave_pos AS gtid")) as unknown as [[{ gtid: string }]];
          return { file: String(status.Relay_Master_Log_File), position: Number(status.Exec_Master_Log_Pos), gtid: pos.gtid };
        }
        if (i > 600) throw new ToolError("REPLICA_WONT_STOP", "the replica's SQL thread did not stop within a minute");
        await new Promise((r) => setTimeout(r, 100));
      }
    });
  }

  async resumeReplica(): Promise<void> {
    await this.#with((c) => c.query("START SLAVE SQL_THREAD"));
    this.#pausedForBackup = false;
  }

  async checksums(): Promise<Record<string, string | null>> {
    return this.#with((c) => tableChecksums(c));
  }

  async dataSize(): Promise<number> {
    return this.#with(async (c) => {
      const [[row]] = (await c.query("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS bytes FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN (?)", [systemSchemas])) as unknown as [[{ bytes: number | string }]];
      return Number(row.bytes);
    });
  }

  async snapshot(kind: "logical" | "physical", options: { signal: AbortSignal; scratchDir: string }): Promise<SnapshotRun> {
    const auth = await this.#optionsFile(options.scratchDir);
    if (kind === "logical") {
      const databases = await this.#with((c) => userDatabases(c));
      const argv = [
        "mariadb-dump",
        `--defaults-extra-file=${auth.path}`,
        ...this.#connectArgs(),
        "--single-transaction",
        "--master-data=2",
        "--gtid",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--add-drop-database",
        "--databases",
        ...databases,
      ];
      if (databases.length === 0) argv.splice(argv.indexOf("--databases"));
      const tool = runTool(argv, { log: this.#log, signal: options.signal });
      tool.stdin.end();
      const watcher = new DumpCoordinates();
      const done = Promise.all([tool.done, finished(watcher)]).then(() => undefined).finally(() => auth.remove());
      return { stream: tool.stdout.pipe(watcher), done, coordinates: () => watcher.coordinates() };
    }
    const target = await mkdtemp(join(options.scratchDir, "mariabackup-"));
    const tool = runTool(
      ["mariabackup", `--defaults-extra-file=${auth.path}`, "--backup", "--stream=xbstream", `--target-dir=${target}`, ...this.#connectArgs(), `--datadir=${this.#db.dataDir}`],
      { log: this.#log, signal: options.signal },
    );
    tool.stdin.end();
    const done = tool.done.finally(async () => {
      await auth.remove();
      await rm(target, { recursive: true, force: true });
    });
    return { stream: tool.stdout, done, coordinates: () => backupCoordinates(tool.stderr) };
  }

  async lock(): Promise<{ coordinates: Coordinates; unlock(): Promise<void> }> {
    const c = await this.#connect();
    try {
      await c.query("FLUSH TABLES WITH READ LOCK");
      const replica = await this.#replicaStatus(c);
      let coordinates: Coordinates;
      if (replica) {
        const [[pos]] = (await c.query("SELECT @@gtid_slave_pos AS gtid")) as unknown as [[{ gtid: string }]];
        coordinates = { file: String(replica.Relay_Master_Log_File), position: Number(replica.Exec_Master_Log_Pos), gtid: pos.gtid };
      } else {
        const [[master]] = (await c.query("SHOW MASTER STATUS")) as unknown as [[{ File: string; Position: number }]];
        const [[pos]] = (await c.query("SELECT @@gtid_binlog_pos AS gtid")) as unknown as [[{ gtid: string }]];
        coordinates = { file: master.File, position: Number(master.Position), gtid: pos.gtid };
      }
      return {
        coordinates,
        unlock: async () => {
          await c.query("UNLOCK TABLES").catch(() => undefined);
          await c.end();
        },
      };
    } catch (error) {
      await c.end().catch(() => undefined);
      throw error;
    }
  }

  async restoreLogical(stream: Readable, options: { signal: AbortSignal }): Promise<void> {
    const journal = await this.#journal();
    await journal.write({ kind: "logical", startedAt: new Date().toISOString() });
    const scratch = await this.scratchDir();
    const auth = await this.#optionsFile(scratch);
    try {
      await loadDump(["mariadb", `--defaults-extra-file=${auth.path}`, ...this.#connectArgs()], stream, { log: this.#log, signal: options.signal });
    } finally {
      await auth.remove();
    }
    await journal.clear();
  }

  async replay(files: readonly string[], options: { start: number; stop?: number; signal: AbortSignal }): Promise<void> {
    const scratch = await this.scratchDir();
    const auth = await this.#optionsFile(scratch);
    // Nothing relies on this server's data until the restore ends: commits need not each wait
    // for a disk flush while it replays (a replay cut off fails the restore, which is done again).
    const [[durability]] = (await this.#with((c) => c.query("SELECT @@innodb_flush_log_at_trx_commit AS innodb, @@sync_binlog AS binlog"))) as unknown as [[{ innodb: number; binlog: number }]];
    await this.#with((c) => c.query("SET GLOBAL innodb_flush_log_at_trx_commit = 2, GLOBAL sync_binlog = 0"));
    try {
      const decode = runTool(
        ["mariadb-binlog", "--no-defaults", `--start-position=${options.start}`, ...(options.stop === undefined ? [] : [`--stop-position=${options.stop}`]), "--", ...files],
        { log: this.#log, signal: options.signal },
      );
      decode.stdin.end();
      await Promise.all([loadDump(["mariadb", `--defaults-extra-file=${auth.path}`, ...this.#connectArgs(), "--binary-mode"], decode.stdout, { log: this.#log, signal: options.signal, binlog: true }), decode.done]);
    } finally {
      await auth.remove();
      await this.#with(async (c) => {
        await c.query("SET GLOBAL innodb_flush_log_at_trx_commit = ?, GLOBAL sync_binlog = ?", [Number(durability.innodb), Number(durability.binlog)]);
        // What the replay wrote reaches the disk before the restore is reported done.
        await c.query("FLUSH ENGINE LOGS");
        await c.query("FLUSH BINARY LOGS");
      });
    }
  }

  async restorePhysical(stream: Readable, options: { signal: AbortSignal; scratchDir: string; onStage?: (stage: string) => void }): Promise<void> {
    const prepared = await extractPhysical(stream, options.scratchDir, { log: this.#log, signal: options.signal, onStage: options.onStage });
    const dataDir = this.#db.dataDir;
    const aside = `${dataDir}.bosun-before-${Date.now()}`;
    const owner = await stat(dataDir);
    const journal = await this.#journal();
    // If the agent dies from here on, its next start puts the old data back (recover()).
    await journal.write({ kind: "physical", aside, startedAt: new Date().toISOString() });
    let stopped = false;
    let moved = false;
    try {
      options.onStage?.("stopping the server");
      await this.stop();
      stopped = true;
      await rename(dataDir, aside);
      moved = true;
      await mkdir(dataDir, { mode: owner.mode & 0o7777 });
      options.onStage?.("moving the backup into the data directory");
      await toolOutput(["mariabackup", "--move-back", `--target-dir=${prepared}`, `--datadir=${dataDir}`], { log: this.#log, signal: options.signal });
      // The server runs as the data directory's owner; the files must be its own again.
      await chown(dataDir, owner.uid, owner.gid);
      for await (const entry of walkTree(dataDir)) await chown(entry.path, owner.uid, owner.gid);
      options.onStage?.("starting the server");
      await this.#start();
    } catch (error) {
      // Never leave a half-restored server: put the old data back and start it as it was.
      if (moved) await putBack(dataDir, aside);
      if (stopped) await this.#start().catch((e: unknown) => this.#log.error({ err: e }, "could not start the server again after a failed restore"));
      await journal.clear();
      throw error;
    } finally {
      await rm(prepared, { recursive: true, force: true });
    }
    await journal.clear();
    await rm(aside, { recursive: true, force: true });
  }

  async recover(): Promise<string | undefined> {
    const journal = await this.#journal();
    const interrupted = await journal.read();
    if (!interrupted) return undefined;
    if (interrupted.kind === "physical") {
      const aside = interrupted.aside!;
      const kept = await stat(aside).then(() => true, () => false);
      if (!kept) {
        await journal.clear();
        return undefined;
      }
      await this.stop().catch(() => undefined);
      await putBack(this.#db.dataDir, aside);
      await this.#start();
      await journal.clear();
      return `a physical restore started ${interrupted.startedAt} was interrupted: the data it was replacing is back in ${this.#db.dataDir} and the server started`;
    }
    await this.stop().catch(() => undefined);
    return `a logical restore started ${interrupted.startedAt} was interrupted part-way: the server is stopped, as its data is half-restored; restore again`;
  }

  async settle(coordinates: Coordinates, replicaOf: { host: string; port: number } | undefined, options: { sourceServerId: number }): Promise<number> {
    const password = replicaOf && this.#db.replicationPasswordFile ? (await readFile(this.#db.replicationPasswordFile, "utf8")).trim() : "";
    const serverId = await this.#with(async (c) => {
      await c.query("STOP SLAVE");
      await c.query("RESET SLAVE ALL");
      await c.query("SET GLOBAL gtid_slave_pos = ?", [coordinates.gtid]);
      const [[row]] = (await c.query("SELECT @@server_id AS id")) as unknown as [[{ id: number }]];
      let id = Number(row.id);
      if (id === options.sourceServerId) {
        // Two servers with one id break replication (each ignores the other's events): give this one its own.
        id = ownServerId(this.#stateDir, options.sourceServerId);
        await c.query("SET GLOBAL server_id = ?", [id]);
        this.#log.warn({ serverId: id, sourceServerId: options.sourceServerId }, "this server had the id of the server the snapshot came from; it runs with its own now: set server_id in its configuration to keep it across restarts");
      }
      if (replicaOf) {
        await c.query("CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = ?, MASTER_PASSWORD = ?, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 5", [
          replicaOf.host,
          replicaOf.port,
          this.#db.replicationUser,
          password,
        ]);
        await c.query("START SLAVE");
      }
      return id;
    });
    // The restored data is another history from here on: a new epoch for this server's archive.
    await this.#newEpoch();
    return serverId;
  }

  async stop(): Promise<void> {
    await toolOutput(this.#db.stopCommand, { log: this.#log });
  }

  async startIfHalfRestored(): Promise<void> {
    if ((await (await this.#journal()).read())?.kind !== "logical") return;
    const answers = await this.#with((c) => c.query("SELECT 1")).then(
      () => true,
      () => false,
    );
    if (!answers) await this.#start();
  }

  async #start(): Promise<void> {
    await toolOutput(this.#db.startCommand, { log: this.#log });
    await this.#ready(120_000);
  }

  /** What a restore in progress has done, in the state directory, so a restart can undo it. */
  async #journal() {
    const path = join(this.#stateDir, "db-restore.json");
    await mkdir(this.#stateDir, { recursive: true });
    return {
      read: async (): Promise<{ kind: "logical" | "physical"; aside?: string; startedAt: string } | undefined> =>
        readFile(path, "utf8").then((text) => JSON.parse(text) as { kind: "logical" | "physical"; aside?: string; startedAt: string }, () => undefined),
      write: (entry: { kind: "logical" | "physical"; aside?: string; startedAt: string }) => writeFileDurably(path, JSON.stringify(entry), { mode: 0o600 }),
      clear: () => rm(path, { force: true }),
    };
  }

  async scratchServer(kind: "logical" | "physical", options: { dir: string; signal: AbortSignal; physical?: Readable }): Promise<ScratchServer> {
    const dataDir = join(options.dir, "data");
    if (kind === "physical") {
      const prepared = await extractPhysical(options.physical!, options.dir, { log: this.#log, signal: options.signal });
      await rename(prepared, dataDir);
    } else {
      await mkdir(dataDir, { recursive: true });
      await toolOutput(["mariadb-install-db", "--no-defaults", `--datadir=${dataDir}`, ...asRoot(), "--auth-root-authentication-method=normal", "--skip-test-db"], { log: this.#log, signal: options.signal });
    }
    const socket = join(options.dir, "scratch.sock");
    const server = runTool(
      ["mariadbd", "--no-defaults", ...asRoot(), `--datadir=${dataDir}`, "--skip-networking", `--socket=${socket}`, `--pid-file=${join(options.dir, "scratch.pid")}`, `--log-error=${join(options.dir, "error.log")}`, "--server-id=999", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
        // A physical copy brings its own accounts; no network and no grants: only this agent, through the socket, reaches it.
        ...(kind === "physical" ? ["--skip-grant-tables"] : [])],
      { log: this.#log, signal: options.signal },
    );
    server.stdin.end();
    server.done.catch(() => undefined);
    const connect = () => createConnection({ socketPath: socket, user: "root", password: "", multipleStatements: true });
    await waitUntil(async () => (await connect()).end(), 120_000, () => server.child.exitCode !== null && new ToolError("SCRATCH_SERVER", `the scratch server exited; see ${join(options.dir, "error.log")}`));
    return {
      loadLogical: (stream, signal) => loadDump(["mariadb", "--no-defaults", `--socket=${socket}`, "--user=root"], stream, { log: this.#log, signal }),
      checksums: async () => {
        const c = await connect();
        try {
          return await tableChecksums(c);
        } finally {
          await c.end();
        }
      },
      close: async () => {
        server.child.kill("SIGTERM");
        await server.done.catch(() => undefined);
        await rm(options.dir, { recursive: true, force: true });
      },
    };
  }

  async scratchDir(): Promise<string> {
    const dir = this.#db.scratchDir ?? join(this.#stateDir, "db-scratch");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  #connectArgs(): string[] {
    return [...(this.#db.socket ? [`--socket=${this.#db.socket}`] : [`--host=${this.#db.host}`, `--port=${this.#db.port}`]), `--user=${this.#db.user}`];
  }

  async #password(): Promise<string> {
    return this.#db.passwordFile ? (await readFile(this.#db.passwordFile, "utf8")).trim() : "";
  }

  /** The password in a [client] options file readable by the agent alone, removed after use. */
  async #optionsFile(dir: string): Promise<{ path: string; remove(): Promise<void> }> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, `client-${randomUUID()}.cnf`);
    await writeFile(path, `[client]\npassword=${await this.#password()}\n`, { mode: 0o600 });
    return { path, remove: () => rm(path, { force: true }) };
  }

  async #connect(): Promise<Connection> {
    const password = await this.#password();
    return createConnection({
      ...(this.#db.socket ? { socketPath: this.#db.socket } : { host: this.#db.host, port: this.#db.port }),
      user: this.#db.user,
      password,
      multipleStatements: false,
      connectTimeout: 10_000,
    });
  }

  async #with<T>(fn: (c: Connection) => Promise<T>): Promise<T> {
    const c = await this.#connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async #ready(timeoutMs: number): Promise<void> {
    await waitUntil(async () => this.#with((c) => c.query("SELECT 1")), timeoutMs, () => undefined);
  }

  async #replicaStatus(c: Connection): Promise<Record<string, unknown> | undefined> {
    const [rows] = (await c.query("SHOW SLAVE STATUS")) as unknown as [Record<string, unknown>[]];
    return rows[0];
  }

  /** This server's name in Bosun's archive, kept in the state directory: made once. */
  async #serverUuid(): Promise<string> {
    const path = join(this.#stateDir, "db-server.json");
    await mkdir(this.#stateDir, { recursive: true });
    await createFileDurably(path, JSON.stringify({ uuid: randomUUID(), epoch: 1 }));
    return (JSON.parse(await readFile(path, "utf8")) as { uuid: string }).uuid;
  }

  async #newEpoch(): Promise<void> {
    const path = join(this.#stateDir, "db-server.json");
    await this.#serverUuid();
    const current = JSON.parse(await readFile(path, "utf8")) as { uuid: string; epoch: number };
    await writeFile(path, JSON.stringify({ ...current, epoch: current.epoch + 1 }));
  }
}

/** The file names the server's binary-log index file lists, in order (its lines are paths, relative or absolute). */
async function binlogIndexFile(path: string): Promise<string[]> {
  const text = await readFile(path.endsWith(".index") ? path : `${path}.index`, "utf8");
  return text.split("\n").map((line) => basename(line.trim())).filter((name) => /\.[0-9]{6,}$/.test(name));
}

/** Puts a data directory set aside by a restore back in its place. */
async function putBack(dataDir: string, aside: string): Promise<void> {
  await rm(dataDir, { recursive: true, force: true });
  await rename(aside, dataDir);
}

/** A server id of this node's own, from its state directory's path and the id it must differ from (1 .. 2^32-1). */
function ownServerId(stateDir: string, not: number): number {
  const id = (createHash("sha256").update(stateDir).digest().readUInt32BE(0) % 0xffff_fffe) + 1;
  return id === not ? (id % 0xffff_fffe) + 1 : id;
}

/** `--user=root` when the agent runs as root (tests, a developer's machine): mariadbd refuses root otherwise. */
function asRoot(): string[] {
  return process.getuid?.() === 0 ? ["--user=root"] : [];
}

async function userDatabases(c: Connection): Promise<string[]> {
  const [rows] = (await c.query("SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN (?) ORDER BY 1", [systemSchemas])) as unknown as [{ name: string }[]];
  return rows.map((r) => r.name);
}

async function tableChecksums(c: Connection): Promise<Record<string, string | null>> {
  const [tables] = (await c.query(
    "SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN (?) ORDER BY 1, 2",
    [systemSchemas],
  )) as unknown as [{ s: string; t: string }[]];
  const out: Record<string, string | null> = {};
  for (const { s, t } of tables) {
    const [[row]] = (await c.query(`CHECKSUM TABLE ${c.escapeId(s)}.${c.escapeId(t)}`)) as unknown as [[{ Checksum: number | string | null }]];
    out[`${s}.${t}`] = row.Checksum === null ? null : String(row.Checksum);
  }
  return out;
}

/**
 * Feeds SQL to the mariadb client: a dump without writing it to this server's binary log; a
 * replay (`binlog`) into it, so the replayed transactions keep their GTIDs there and a server
 * promoted afterwards numbers its own transactions after them.
 */
async function loadDump(client: string[], stream: Readable, options: { log: Logger; signal: AbortSignal; binlog?: boolean }): Promise<void> {
  const tool = runTool(options.binlog ? client : [...client, "--init-command=SET SESSION sql_log_bin=0"], { log: options.log, signal: options.signal });
  tool.stdout.resume();
  await Promise.all([pipeline(stream, tool.stdin), tool.done]);
}

/** Extracts an xbstream into a new directory below `dir` and prepares it; returns that directory. */
async function extractPhysical(stream: Readable, dir: string, options: { log: Logger; signal: AbortSignal; onStage?: ((stage: string) => void) | undefined }): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const target = await mkdtemp(join(dir, "restore-"));
  try {
    options.onStage?.("extracting");
    const extract = runTool(["mbstream", "-x", "-C", target], options);
    extract.stdout.resume();
    await Promise.all([pipeline(stream, extract.stdin), extract.done]);
    options.onStage?.("preparing");
    await toolOutput(["mariabackup", "--prepare", `--target-dir=${target}`], options);
    return target;
  } catch (error) {
    await rm(target, { recursive: true, force: true });
    throw error;
  }
}

async function waitUntil(attempt: () => Promise<unknown>, timeoutMs: number, gaveUp: () => Error | false | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fatal = gaveUp();
    if (fatal) throw fatal;
    try {
      await attempt();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Passes a dump through and reads its coordinates on the way: mariadb-dump --master-data=2
 * --gtid writes the binary log file and position in a comment near the top, and the GTID
 * position near the end.
 */
class DumpCoordinates extends Transform {
  #head = Buffer.alloc(0);
  #tail = Buffer.alloc(0);

  // Only the first 64 KiB and the last 8 KiB are kept (as bytes: decoding a whole dump costs CPU and memory).
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (this.#head.length < 65536) this.#head = Buffer.concat([this.#head, chunk.subarray(0, 65536 - this.#head.length)]);
    this.#tail = chunk.length >= 8192 ? Buffer.from(chunk.subarray(chunk.length - 8192)) : Buffer.concat([this.#tail, chunk]).subarray(-8192);
    done(null, chunk);
  }

  coordinates(): Coordinates | undefined {
    const [head, tail] = [this.#head.toString("latin1"), this.#tail.toString("latin1")];
    const at = /CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)/.exec(head);
    const gtid = /gtid_slave_pos='([^']*)'/.exec(tail) ?? /gtid_slave_pos='([^']*)'/.exec(head);
    return at ? { file: at[1]!, position: Number(at[2]), gtid: gtid?.[1] ?? "" } : undefined;
  }
}

/** mariabackup's log names where the backup stands: "MySQL binlog position: filename '…', position '…', GTID of the last change '…'". */
function backupCoordinates(stderr: readonly string[]): Coordinates | undefined {
  for (const line of stderr) {
    const m = /binlog position: filename '([^']+)', position '(\d+)'(?:, GTID of the last change '([^']*)')?/.exec(line);
    if (m) return { file: m[1]!, position: Number(m[2]), gtid: m[3] ?? "" };
  }
  return undefined;
}
