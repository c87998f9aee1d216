import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { acquirePidLock, isBosunProcess, whereIs } from "@bosun/core";
import { spawnBosun, type BosunProcess } from "../children.ts";
import { createContext } from "../context.ts";
import { loadFauxqs, startEmulator, type Emulator } from "../emulator.ts";
import { ensureDemoRepo, startSiteServer } from "../devsite.ts";
import { freePort, startDevDatabases, type DevDatabases } from "../devdb.ts";
import { init } from "./init.ts";
import { keysGenerate } from "./keys.ts";

export interface DevOptions {
  dir: string;
  port: number;
  /** First port of the web nodes' demo sites (web-1 gets it, web-2 the next); 0 picks free ones. */
  sitePort: number;
  web: number;
  /** Start a db agent; by default when mariadbd is on the PATH. */
  db?: boolean | undefined;
  onLine: (name: string, line: string) => void;
}

export interface DevFleet {
  endpoint: string;
  configFile: string;
  nodes: { id: string; roles: string[]; site?: string }[];
  demoRepo: string;
  /** lb-1's HAProxy in front of the web nodes, when haproxy is installed. */
  balancer?: string;
  close(): Promise<void>;
}

/** The keys a dev fleet's issuers use: on-call (anything), CI (releases) and the coordinator (schedules, node-down). Nodes make their own. */
const devKeys = [
  { id: "oncall", allow: ["*"] },
  { id: "ci", allow: ["release", "activate", "rollback"] },
  { id: "coordinator", allow: ["*", "event:*"] },
];

/**
 * A whole fleet on this machine: the emulator, the topology, keys, a coordinator, two web
 * agents, a balancer and (with MariaDB installed) two db nodes, each a child process: db-1 with
 * a MariaDB primary, db-2 with a replica of it marked for backups (devdb.ts).
 */
export async function dev(options: DevOptions): Promise<DevFleet> {
  const dir = resolve(options.dir);
  // Before anything is made: the bundle has no emulator, and says so.
  await loadFauxqs();
  await mkdir(dir, { recursive: true });
  const lock = await acquirePidLock(join(dir, "dev.pid"), `The dev fleet in ${dir}`);
  await stopSurvivors(join(dir, "children.json"), options.onLine);
  const started: BosunProcess[] = [];
  const sites: { close(): Promise<void> }[] = [];
  let emulator: Emulator | undefined;
  let databases: DevDatabases | undefined;
  const close = async () => {
    const results = await Promise.allSettled(started.reverse().map((p) => p.stop(90_000)));
    for (const [i, r] of results.entries()) {
      if (r.status === "fulfilled" && r.value.code !== 0) options.onLine(started[i]!.name, `exited with ${r.value.code ?? r.value.signal}`);
    }
    await databases?.close();
    await Promise.allSettled(sites.map((s) => s.close()));
    await emulator?.stop().catch(() => undefined);
    await rm(join(dir, "children.json"), { force: true });
    await lock.release();
  };
  try {
    emulator = await startEmulator({ dir: join(dir, "emulator"), port: options.port });
    const keysDir = join(dir, "keys");
    for (const key of devKeys) {
      if (!existsSync(join(keysDir, `${key.id}.key`))) {
        await keysGenerate({ id: key.id, allow: key.allow, dir: keysDir, trustFile: join(keysDir, "trust.json") });
      }
    }
    const demoRepo = join(dir, "demo-site");
    await ensureDemoRepo(demoRepo);
    const configFile = join(dir, "bosun.json");
    await writeFile(
      configFile,
      `${JSON.stringify(
        {
          cluster: "dev",
          bucket: "bosun-dev",
          stateDir: "state",
          trustFile: "keys/trust.json",
          keyId: "oncall",
          signingKey: "keys/oncall.key",
          heartbeatSeconds: 5,
          lostAfterSeconds: 20,
          devEndpoint: emulator.endpoint,
          // Publishers read the demo app's repository from here; each web node gets its own root below.
          apps: { demo: { root: "nodes/publisher/demo", repos: [demoRepo] } },
        },
        null,
        2,
      )}\n`,
    );
    const ctx = createContext({ config: configFile }, {}, { name: "dev", stream: "stderr" });
    try {
      await init(ctx);
    } finally {
      ctx.close();
    }

    const withDb = options.db ?? ["mariadbd", "mariadb-install-db", "mariadb-dump", "mariadb"].every(onPath);
    if (withDb) {
      databases = await startDevDatabases(join(dir, "databases"), { onLine: (line) => options.onLine("dev", line) });
    }
    const nodes: DevFleet["nodes"] = [
      ...Array.from({ length: options.web }, (_, i) => ({ id: `web-${i + 1}`, roles: ["web"] })),
      { id: "lb-1", roles: ["balancer"] },
      ...(withDb ? [{ id: "db-1", roles: ["db"] }, { id: "db-2", roles: ["db"] }] : []),
    ];
    // lb-1 runs HAProxy in front of the web nodes' demo sites where it is installed (Debian puts it in /usr/sbin).
    const haproxy = whereIs("haproxy");
    const balancer = haproxy ? `http://127.0.0.1:${await freePort()}` : undefined;
    const env = (extra: Record<string, string>) => ({ ...process.env, BOSUN_CONFIG: configFile, ...extra });
    const launch = async (name: string, args: string[], extra: Record<string, string>) => {
      const child = spawnBosun({ name, args, env: env(extra), onLine: (line) => options.onLine(name, line) });
      started.push(child);
      // Children stop when this process dies; should one outlive it anyway, the next start finds it here.
      await writeFile(join(dir, "children.json"), `${JSON.stringify(started.map((p) => ({ name: p.name, pid: p.child.pid })))}\n`);
      return child;
    };
    await launch("coordinator", ["coordinator"], { BOSUN_KEY_ID: "coordinator", BOSUN_SIGNING_KEY: join(keysDir, "coordinator.key") });
    for (const [i, node] of nodes.entries()) {
      const extra: Record<string, string> = {};
      if (node.roles.includes("web")) {
        // Each web node serves its own copy of the demo site, as nginx would on its own machine.
        const root = join(dir, "nodes", node.id, "www", "demo");
        const site = await startSiteServer(join(root, "current"), options.sitePort === 0 ? 0 : options.sitePort + i);
        sites.push(site);
        node.site = site.url;
        extra["BOSUN_APPS"] = JSON.stringify({ demo: { root, repos: [demoRepo], health: { url: `${site.url}/.bosun-release`, marker: true } } });
        extra["BOSUN_WEB"] = JSON.stringify({ advertise: { host: "127.0.0.1", port: Number(new URL(site.url).port) } });
      }
      if (node.roles.includes("balancer") && haproxy && balancer) {
        extra["BOSUN_BALANCER"] = JSON.stringify({
          haproxy,
          listen: { host: "127.0.0.1", port: Number(new URL(balancer).port) },
          check: { path: "/", interMs: 1000, fall: 2, rise: 1 },
          drainTimeoutSeconds: 30,
          networks: ["127.0.0.0/8"],
        });
      }
      if (node.roles.includes("db")) extra["BOSUN_DB"] = databases!.settings[node.id]!;
      await launch(node.id, ["agent", "--node-id", node.id, ...node.roles.flatMap((r) => ["--role", r])], {
        // Each node makes its own event key in its state directory and registers it.
        BOSUN_STATE_DIR: join(dir, "nodes", node.id),
        ...extra,
      });
    }
    return { endpoint: emulator.endpoint, configFile, nodes, demoRepo, ...(balancer ? { balancer } : {}), close };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * Stops processes an earlier dev fleet in this directory left running (its parent was killed
 * before it could stop them): a second set would share their queues and ledgers.
 */
async function stopSurvivors(file: string, onLine: DevOptions["onLine"]): Promise<void> {
  const text = await readFile(file, "utf8").catch(() => undefined);
  if (!text) return;
  let listed: { name: string; pid: number }[] = [];
  try {
    listed = JSON.parse(text) as typeof listed;
  } catch {
    // A torn file from a killed fleet: nothing to go on.
  }
  const alive = [];
  for (const p of listed) if (await isBosunProcess(p.pid)) alive.push(p);
  // A process may end between the look and the signal: that is the wanted outcome, not an error.
  const signal = (pid: number, name: NodeJS.Signals) => {
    try {
      process.kill(pid, name);
    } catch {
      // Gone already.
    }
  };
  for (const p of alive) {
    onLine("dev", `stopping ${p.name} (pid ${p.pid}), left running by an earlier fleet in this directory`);
    signal(p.pid, "SIGTERM");
  }
  const deadline = Date.now() + 30_000;
  for (const p of alive) {
    while ((await isBosunProcess(p.pid)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (await isBosunProcess(p.pid)) signal(p.pid, "SIGKILL");
  }
  await rm(file, { force: true });
}

function onPath(command: string): boolean {
  return whereIs(command) !== undefined;
}

