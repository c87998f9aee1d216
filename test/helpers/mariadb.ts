import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createConnection, type Connection } from "mysql2/promise";
import { freePort } from "./web.ts";
import { onPath } from "./tools.ts";
import { demoDataSql, installDataDir, pidAlive, serverArgs, serverControls, serverPid, startServer, stopServer } from "../../packages/cli/src/devdb.ts";

/** The MariaDB tools the db role drives, and the Debian package of each. */
export const mariadbTools: Record<string, string> = {
  mariadbd: "mariadb-server",
  "mariadb-install-db": "mariadb-server",
  mariadb: "mariadb-client",
  "mariadb-dump": "mariadb-client",
  mariabackup: "mariadb-backup",
  mbstream: "mariadb-backup",
};

/** Why real MariaDB cannot run here, or undefined when it can. */
export function mariadbMissing(): string | undefined {
  const missing = Object.entries(mariadbTools).filter(([tool]) => !onPath(tool));
  return missing.length ? `${missing.map(([tool]) => tool).join(", ")} not found: install with \`apt-get install ${[...new Set(missing.map(([, pkg]) => pkg))].join(" ")}\`` : undefined;
}

/**
 * A throwaway mariadbd of the tests' own: a data directory in a temp dir, a free port, a socket,
 * binary logging with GTIDs, started in the foreground as this process's child. Never the
 * machine's own MariaDB. A server a node's agent stops and starts (a physical restore) is run
 * detached as `bosun dev` runs its own (`controlled`): `controls` gives the argv of the agent's
 * stop and start commands (`bosun db-server`), and stopping it goes by its pid file.
 */
export class MariaDb {
  readonly dir: string;
  readonly port: number;
  readonly serverId: number;
  readonly #child: ChildProcess | undefined;

  private constructor(child: ChildProcess | undefined, dir: string, port: number, serverId: number) {
    this.#child = child;
    this.dir = dir;
    this.port = port;
    this.serverId = serverId;
  }

  get socket(): string {
    return join(this.dir, "mysqld.sock");
  }

  get dataDir(): string {
    return join(this.dir, "data");
  }

  get running(): boolean {
    if (this.#child) return this.#child.exitCode === null && this.#child.signalCode === null;
    return pidAlive(this.#pid());
  }

  /** A new server with an empty data directory (mariadb-install-db), ready for queries. */
  static async start(options: { serverId: number; name?: string; dir?: string; controlled?: boolean }): Promise<MariaDb> {
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), `bosun-${options.name ?? "mariadb"}-`)));
    await installDataDir(dir);
    const port = await freePort();
    if (options.controlled) {
      await startServer(dir, port, options.serverId);
      return new MariaDb(undefined, dir, port, options.serverId);
    }
    return MariaDb.run(dir, port, options.serverId);
  }

  /** Starts mariadbd on an existing data directory and waits until it answers. */
  static async run(dir: string, port: number, serverId: number): Promise<MariaDb> {
    const child = spawn("mariadbd", serverArgs(dir, port, serverId), { stdio: "ignore" });
    const server = new MariaDb(child, dir, port, serverId);
    await server.ready();
    return server;
  }

  /** The stop and start commands a node's agent runs for this server (db.stopCommand, db.startCommand). */
  get controls(): { stopCommand: string[]; startCommand: string[] } {
    return serverControls(this.dir, this.port, this.serverId);
  }

  #pid(): number {
    return serverPid(this.dir);
  }

  /** Stops the server: its child by a signal, a controlled one through its pid file; SIGKILL after `killAfterMs`. */
  async stop(killAfterMs = 5000): Promise<void> {
    if (this.#child) {
      if (!this.running) return;
      const exited = once(this.#child, "exit");
      this.#child.kill("SIGTERM");
      const timer = setTimeout(() => this.#child!.kill("SIGKILL"), killAfterMs);
      await exited;
      clearTimeout(timer);
      return;
    }
    await stopServer(this.dir, killAfterMs);
  }

  /** Kills the server at once, as a crash would. */
  kill(): void {
    if (this.#child) this.#child.kill("SIGKILL");
    else if (pidAlive(this.#pid())) process.kill(this.#pid(), "SIGKILL");
  }

  /** Waits until the server answers a query (polling every 50 ms, bounded). */
  async ready(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`mariadbd exited; see ${join(this.dir, "error.log")}`);
      try {
        const c = await this.connect();
        await c.end();
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`mariadbd did not answer within ${timeoutMs} ms: ${(error as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  connect(): Promise<Connection> {
    return createConnection({ socketPath: this.socket, user: "root", password: "", multipleStatements: true });
  }

  async query<T = unknown>(sql: string, values: unknown[] = []): Promise<T> {
    const c = await this.connect();
    try {
      const [rows] = await c.query(sql, values);
      return rows as T;
    } finally {
      await c.end();
    }
  }

  /** CHECKSUM TABLE of every base table outside the system schemas, by "schema.table". */
  async checksums(): Promise<Record<string, string | null>> {
    const tables = await this.query<{ name: string }[]>(
      "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) AS name FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema') ORDER BY 1",
    );
    const out: Record<string, string | null> = {};
    for (const { name } of tables) {
      const [row] = await this.query<{ Checksum: number | string | null }[]>(`CHECKSUM TABLE ${name.split(".").map((p) => `\`${p}\``).join(".")}`);
      out[name] = row?.Checksum === null || row?.Checksum === undefined ? null : String(row.Checksum);
    }
    return out;
  }

  /** Makes this server a replica of `primary` by GTID, and waits until it has caught up. */
  async replicate(primary: MariaDb): Promise<void> {
    await primary.query("CREATE USER IF NOT EXISTS repl@'%' IDENTIFIED BY 'replpw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO repl@'%'");
    await this.query(
      `CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${primary.port}, MASTER_USER='repl', MASTER_PASSWORD='replpw', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE`,
    );
    await this.caughtUpWith(primary);
  }

  /** Waits until this replica has applied everything `primary` has written. */
  async caughtUpWith(primary: MariaDb, timeoutMs = 30_000): Promise<void> {
    const [row0] = await primary.query<{ pos: string }[]>("SELECT @@gtid_binlog_pos AS pos");
    const pos = row0?.pos ?? "";
    const [row] = await this.query<{ done: number | null }[]>("SELECT MASTER_GTID_WAIT(?, ?) AS done", [pos, timeoutMs / 1000]);
    if (row?.done !== 0) throw new Error(`the replica did not reach ${pos} within ${timeoutMs} ms`);
  }

  async destroy(): Promise<void> {
    await this.stop(30_000);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A little data to back up: two schemas, a few tables, rows of several types (what `bosun dev` loads). */
export async function loadDemoData(db: MariaDb, rows = 200): Promise<void> {
  await db.query(demoDataSql(rows));
}

/** A MariaDB options file holding a password, readable by its owner only: passwords never go in argv. */
export async function optionsFile(dir: string, password: string): Promise<string> {
  const path = join(dir, "client.cnf");
  await writeFile(path, `[client]\npassword=${password}\n`, { mode: 0o600 });
  return path;
}

