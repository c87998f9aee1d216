import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createConnection, type Connection } from "mysql2/promise";
import { freePort } from "./web.ts";
import { onPath } from "./tools.ts";

const run = promisify(execFile);

/** Why real MariaDB cannot run here, or undefined when it can. */
export function mariadbMissing(): string | undefined {
  const tools = ["mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump", "mariabackup", "mbstream"];
  const missing = tools.filter((t) => !onPath(t));
  return missing.length ? `${missing.join(", ")} not found: install with \`apt-get install mariadb-server mariadb-backup\`` : undefined;
}

/**
 * A throwaway mariadbd of the tests' own: a data directory in a temp dir, a free port, a socket,
 * binary logging with GTIDs, started in the foreground as this process's child. Never the
 * machine's own MariaDB. A server a node's agent stops and starts (a physical restore) is run
 * through mariadbd-ctl.ts instead: `controls` gives the argv the agent's stop and start commands
 * use, and stopping it goes by its pid file.
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

  /** The arguments this server runs with; restarts (and a node's start command) use the same. */
  static args(dir: string, port: number, serverId: number): string[] {
    return [
      "--no-defaults",
      ...(process.getuid?.() === 0 ? ["--user=root"] : []),
      `--datadir=${join(dir, "data")}`,
      `--port=${port}`,
      "--bind-address=127.0.0.1",
      `--socket=${join(dir, "mysqld.sock")}`,
      `--pid-file=${join(dir, "mysqld.pid")}`,
      `--log-error=${join(dir, "error.log")}`,
      `--tmpdir=${join(dir, "tmp")}`,
      `--server-id=${serverId}`,
      `--log-bin=${join(dir, "data", "binlog")}`,
      "--binlog-format=ROW",
      "--log-slave-updates",
      "--innodb-buffer-pool-size=64M",
      "--innodb-log-file-size=16M",
      "--skip-name-resolve",
    ];
  }

  /** A new server with an empty data directory (mariadb-install-db), ready for queries. */
  static async start(options: { serverId: number; name?: string; dir?: string; controlled?: boolean }): Promise<MariaDb> {
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), `bosun-${options.name ?? "mariadb"}-`)));
    await mkdir(join(dir, "data"), { recursive: true });
    await mkdir(join(dir, "tmp"), { recursive: true });
    // A temp directory of its own: servers bootstrapped at once in one /tmp can trip over each other's temporary tables.
    await run("mariadb-install-db", [
      "--no-defaults",
      `--datadir=${join(dir, "data")}`,
      ...(process.getuid?.() === 0 ? ["--user=root"] : []),
      "--auth-root-authentication-method=normal",
      "--skip-test-db",
      `--tmpdir=${join(dir, "tmp")}`,
    ]);
    const port = await freePort();
    if (options.controlled) {
      await run(process.execPath, [...controlScript(), "start", dir, String(port), String(options.serverId)]);
      return new MariaDb(undefined, dir, port, options.serverId);
    }
    return MariaDb.run(dir, port, options.serverId);
  }

  /** Starts mariadbd on an existing data directory and waits until it answers. */
  static async run(dir: string, port: number, serverId: number): Promise<MariaDb> {
    const child = spawn("mariadbd", MariaDb.args(dir, port, serverId), { stdio: "ignore" });
    const server = new MariaDb(child, dir, port, serverId);
    await server.ready();
    return server;
  }

  /** The stop and start commands a node's agent runs for this server (db.stopCommand, db.startCommand). */
  get controls(): { stopCommand: string[]; startCommand: string[] } {
    return {
      stopCommand: [process.execPath, ...controlScript(), "stop", this.dir],
      startCommand: [process.execPath, ...controlScript(), "start", this.dir, String(this.port), String(this.serverId)],
    };
  }

  #pid(): number {
    try {
      return Number.parseInt(readFileSync(join(this.dir, "mysqld.pid"), "utf8"), 10);
    } catch {
      return 0;
    }
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
    await stopByPid(this.#pid(), killAfterMs);
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

/** A little data to back up: two schemas, a few tables, rows of several types. */
export async function loadDemoData(db: MariaDb, rows = 200): Promise<void> {
  const values = Array.from({ length: rows }, (_, i) => `(${i + 1}, 'customer ${i + 1}', ${(i * 37) % 1000}.${i % 100}, '2026-01-${String((i % 28) + 1).padStart(2, "0")}')`).join(",");
  await db.query(
    [
      "CREATE DATABASE IF NOT EXISTS shop",
      "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100), balance DECIMAL(10,2), since DATE) ENGINE=InnoDB",
      `INSERT INTO shop.customers VALUES ${values}`,
      "CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,2), note TEXT) ENGINE=InnoDB",
      "INSERT INTO shop.orders (customer, total, note) SELECT id, balance / 2, REPEAT('x', id % 50) FROM shop.customers",
      "CREATE DATABASE IF NOT EXISTS audit",
      "CREATE TABLE audit.log (at DATETIME, what VARCHAR(200)) ENGINE=InnoDB",
      "INSERT INTO audit.log VALUES (NOW(), 'demo data loaded')",
    ].join(";"),
  );
}

/** A MariaDB options file holding a password, readable by its owner only: passwords never go in argv. */
export async function optionsFile(dir: string, password: string): Promise<string> {
  const path = join(dir, "client.cnf");
  await writeFile(path, `[client]\npassword=${password}\n`, { mode: 0o600 });
  return path;
}

function controlScript(): string[] {
  return [join(import.meta.dirname, "mariadbd-ctl.ts")];
}

export function pidAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends SIGTERM to a process and waits until it is gone (SIGKILL after `killAfterMs`). */
export async function stopByPid(pid: number, killAfterMs: number): Promise<void> {
  if (!pidAlive(pid)) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + killAfterMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 50));
  }
}
