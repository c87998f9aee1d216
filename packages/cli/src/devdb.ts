import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { createConnection } from "mysql2/promise";
import { mainScript } from "./children.ts";

const run = promisify(execFile);

/**
 * Local MariaDB servers for `bosun dev` (and the tests): a data directory, socket, pid file and
 * logs under one directory, binary logging with GTIDs, run detached so that a node's agent can
 * stop and start its server as systemd would on a real node (`bosun db-server stop|start`).
 */
export function serverArgs(dir: string, port: number, serverId: number): string[] {
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

/** Creates the server's data directory (mariadb-install-db) unless it exists; true when it was made now. */
export async function installDataDir(dir: string): Promise<boolean> {
  if (existsSync(join(dir, "data", "mysql"))) return false;
  await rm(join(dir, "data"), { recursive: true, force: true });
  await mkdir(join(dir, "data"), { recursive: true });
  await mkdir(join(dir, "tmp"), { recursive: true });
  // A temp directory of its own: servers bootstrapped at once in one /tmp trip over each other's temporary tables.
  await run("mariadb-install-db", [
    "--no-defaults",
    `--datadir=${join(dir, "data")}`,
    ...(process.getuid?.() === 0 ? ["--user=root"] : []),
    "--auth-root-authentication-method=normal",
    "--skip-test-db",
    `--tmpdir=${join(dir, "tmp")}`,
  ]);
  return true;
}

/** Starts the server detached and returns once it answers on its socket. */
export async function startServer(dir: string, port: number, serverId: number, timeoutMs = 60_000): Promise<void> {
  await mkdir(join(dir, "tmp"), { recursive: true });
  const child = spawn("mariadbd", serverArgs(dir, port, serverId), { detached: true, stdio: "ignore" });
  child.unref();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mariadbd exited with ${child.exitCode}; see ${join(dir, "error.log")}`);
    try {
      await (await createConnection({ socketPath: join(dir, "mysqld.sock"), user: "root", password: "" })).end();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`mariadbd did not answer within ${timeoutMs} ms: ${(error as Error).message}; see ${join(dir, "error.log")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The pid the server wrote, or 0. */
export function serverPid(dir: string): number {
  try {
    return Number.parseInt(readFileSync(join(dir, "mysqld.pid"), "utf8"), 10) || 0;
  } catch {
    return 0;
  }
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

/** Stops the server by its pid file and returns once it has exited (SIGKILL after `timeoutMs`). */
export async function stopServer(dir: string, timeoutMs = 60_000): Promise<void> {
  const pid = serverPid(dir);
  if (!pidAlive(pid)) return;
  // Only a mariadbd: a stale pid file must not make this signal a process that took its number.
  const command = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  if (!command.includes("mariadbd") && !command.includes("mysqld")) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The stop and start commands a node's agent runs for a server started here (db.stopCommand, db.startCommand). */
export function serverControls(dir: string, port: number, serverId: number): { stopCommand: string[]; startCommand: string[] } {
  return {
    stopCommand: [process.execPath, mainScript, "db-server", "stop", dir],
    startCommand: [process.execPath, mainScript, "db-server", "start", dir, String(port), String(serverId)],
  };
}

/** A little data to back up: two schemas, a few tables, rows of several types. */
export const demoDataSql = (rows = 200): string => {
  const values = Array.from({ length: rows }, (_, i) => `(${i + 1}, 'customer ${i + 1}', ${(i * 37) % 1000}.${i % 100}, '2026-01-${String((i % 28) + 1).padStart(2, "0")}')`).join(",");
  return [
    "CREATE DATABASE IF NOT EXISTS shop",
    "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100), balance DECIMAL(10,2), since DATE) ENGINE=InnoDB",
    `INSERT INTO shop.customers VALUES ${values}`,
    "CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,2), note TEXT) ENGINE=InnoDB",
    "INSERT INTO shop.orders (customer, total, note) SELECT id, balance / 2, REPEAT('x', id % 50) FROM shop.customers",
    "CREATE DATABASE IF NOT EXISTS audit",
    "CREATE TABLE audit.log (at DATETIME, what VARCHAR(200)) ENGINE=InnoDB",
    "INSERT INTO audit.log VALUES (NOW(), 'demo data loaded')",
  ].join(";");
};

export interface DevDatabases {
  /** BOSUN_DB for each db node, by node id. */
  settings: Record<string, string>;
  close(): Promise<void>;
}

/**
 * The dev fleet's databases: db-1 a primary with demo data, db-2 a replica of it marked for
 * backups, under `dir` (kept between runs; created, loaded and replicated the first time).
 * Each node's settings give its agent the socket, the data directory, a replication account, a
 * backup key and the commands to stop and start its server.
 */
export async function startDevDatabases(dir: string, options: { onLine(line: string): void }): Promise<DevDatabases> {
  await mkdir(dir, { recursive: true });
  const secrets = join(dir, "secrets");
  await mkdir(secrets, { recursive: true, mode: 0o700 });
  const replPassword = join(secrets, "repl.password");
  const backupKey = join(secrets, "backup.key");
  if (!existsSync(replPassword)) await writeFile(replPassword, `${randomHex(16)}\n`, { mode: 0o600 });
  if (!existsSync(backupKey)) await writeFile(backupKey, `${randomHex(32)}\n`, { mode: 0o600 });
  const servers = [
    { node: "db-1", serverId: 1, dir: join(dir, "db-1") },
    { node: "db-2", serverId: 2, dir: join(dir, "db-2") },
  ];
  const ports: number[] = [];
  const started: string[] = [];
  const close = async () => {
    await Promise.allSettled(started.map((d) => stopServer(d)));
  };
  try {
    const fresh: boolean[] = [];
    for (const server of servers) {
      // One left running by a fleet that was killed: stopped first, then started again on a port of this run.
      await stopServer(server.dir);
      fresh.push(await installDataDir(server.dir));
      const port = await freePort();
      ports.push(port);
      await startServer(server.dir, port, server.serverId);
      started.push(server.dir);
    }
    const password = (await readFile(replPassword, "utf8")).trim();
    const query = async (serverDir: string, sql: string, values: unknown[] = []) => {
      const c = await createConnection({ socketPath: join(serverDir, "mysqld.sock"), user: "root", password: "", multipleStatements: true });
      try {
        await c.query(sql, values);
      } finally {
        await c.end();
      }
    };
    if (fresh[0]) {
      options.onLine("db-1: new MariaDB primary with demo data (shop, audit)");
      await query(servers[0]!.dir, demoDataSql());
    }
    await query(servers[0]!.dir, "CREATE USER IF NOT EXISTS repl@'%' IDENTIFIED BY ?; ALTER USER repl@'%' IDENTIFIED BY ?; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO repl@'%'", [password, password]);
    // The primary's port changes from run to run: the replica is pointed at it each time, from where it stands (GTID).
    await query(servers[1]!.dir, "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=?, MASTER_USER='repl', MASTER_PASSWORD=?, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE", [ports[0], password]);
    const settings: Record<string, string> = {};
    for (const [i, server] of servers.entries()) {
      settings[server.node] = JSON.stringify({
        socket: join(server.dir, "mysqld.sock"),
        user: "root",
        dataDir: join(server.dir, "data"),
        ...serverControls(server.dir, ports[i]!, server.serverId),
        replicationUser: "repl",
        replicationPasswordFile: replPassword,
        advertise: { host: "127.0.0.1", port: ports[i] },
        backupReplica: server.node === "db-2",
        backup: { kind: "logical", compression: "zstd", encryptionKeyFile: backupKey, partMB: 16 },
      });
    }
    return { settings, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** A TCP port free on 127.0.0.1 now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function randomHex(bytes: number): string {
  return Array.from(globalThis.crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}
