#!/usr/bin/env node
// The entry point loads only commander and the version: each command's module (with zod, the
// AWS SDK, the agent...) is imported when that command runs, so `bosun --help` answers at once.
import { Command, InvalidArgumentError } from "commander";
import { BOSUN_VERSION } from "@bosun/core/version";
import type { Context, GlobalOptions } from "./context.ts";
import type { NodeProgress } from "@bosun/coordinator";
import { PARENT_PIPE } from "./children.ts";

/** Exit codes: 0 done, 1 a target node failed or did not answer, 2 bad usage or settings, 3 anything else. */
const EXIT = { ok: 0, failed: 1, usage: 2, error: 3 } as const;

const program = new Command("bosun")
  .description("Keeps a fleet of EC2 web, database and load-balancer nodes in step over SNS, SQS and S3.")
  .version(BOSUN_VERSION)
  .option("--config <file>", "Bosun config file (default: ./bosun.json, then ./.bosun/dev/bosun.json; or BOSUN_CONFIG)")
  .showHelpAfterError("(run with --help for usage)")
  .addHelpText(
    "after",
    `
Settings come from the config file and BOSUN_* variables (BOSUN_CLUSTER, BOSUN_BUCKET, ...);
AWS access from the SDK's own settings (AWS_REGION, AWS_ENDPOINT_URL, the credential chain).
Exit codes: 0 done, 1 a target node failed or did not answer, 2 bad usage or settings, 3 other errors.`,
  );

const globals = (): GlobalOptions => program.opts<GlobalOptions>();
/** Whether progress was drawn live on this terminal, so the final output need not repeat the table. */
const liveView = () => Boolean(process.stderr.isTTY && process.stdout.isTTY);
const positiveInt = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number, received ${JSON.stringify(value)}`);
  return n;
};
const collect = (value: string, previous: string[] = []) => [...previous, ...value.split(",").map((v) => v.trim()).filter(Boolean)];

/** Runs a command with a context that is closed afterwards, whatever happens. */
async function withContext<T>(fn: (ctx: Context) => Promise<T>, log: { name: string; stream?: "stdout" | "stderr" } = { name: "cli", stream: "stderr" }): Promise<T> {
  const { createContext } = await import("./context.ts");
  const ctx = createContext(globals(), {}, log);
  try {
    return await fn(ctx);
  } finally {
    ctx.close();
  }
}

/** Prints a command's data: JSON with --json, else through its renderer. */
async function print<T>(json: boolean | undefined, data: T, render: (data: T) => string): Promise<void> {
  const { output } = await import("./render.ts");
  output(Boolean(json)).print(data, render);
}

async function progress(json: boolean, title: string): Promise<{ update(nodes: NodeProgress[]): void; done(): void }> {
  const { progressView } = await import("./live.ts");
  return progressView({ json, title });
}

/**
 * Resolves on the first SIGINT or SIGTERM, or when the parent that started this process dies
 * (its lifeline, stdin, ends). Signals are handled here, in the entry point, alone.
 */
function untilSignal(): Promise<NodeJS.Signals | "parent exited"> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals | "parent exited") => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      process.stdin.off("end", onParentGone).off("error", onParentGone);
      resolve(signal);
    };
    const onParentGone = () => on("parent exited");
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
    if (process.env[PARENT_PIPE] === "1") process.stdin.on("end", onParentGone).on("error", onParentGone).resume();
  });
}

program
  .command("init")
  .description("Create the cluster's SNS topic, S3 bucket and coordinator queue (idempotent)")
  .option("--json", "print the result as JSON")
  .action(async (opts: { json?: boolean }) => {
    const { init, renderInit } = await import("./commands/init.ts");
    await print(opts.json, await withContext(init), renderInit);
  });

program
  .command("dev")
  .description("Run a whole fleet on this machine: emulator, coordinator, web agents, a balancer and (with MariaDB installed) a primary and a replica db node")
  .option("--dir <dir>", "where the fleet keeps its state", ".bosun/dev")
  .option("--port <port>", "port of the local SQS/SNS/S3 endpoint (0 picks a free one)", positiveInt("--port"), 4566)
  .option("--site-port <port>", "first port of the web nodes' demo sites (0 picks free ones)", positiveInt("--site-port"), 8081)
  .option("--web <n>", "how many web agents", positiveInt("--web"), 2)
  .option("--no-db", "do not start the db nodes even if MariaDB is installed")
  .action(async (opts: { dir: string; port: number; sitePort: number; web: number; db: boolean }) => {
    const { dev } = await import("./commands/dev.ts");
    const { formatChildLine } = await import("./devlog.ts");
    const fleet = await dev({
      dir: opts.dir,
      port: opts.port,
      sitePort: opts.sitePort,
      web: opts.web,
      db: opts.db === false ? false : undefined,
      onLine: (name, line) => process.stdout.write(`${formatChildLine(name, line)}\n`),
    });
    process.stdout.write(
      [
        `Local fleet running: ${fleet.nodes.map((n) => `${n.id} (${n.roles.join(",")})`).join(", ")}, coordinator.`,
        `Endpoint ${fleet.endpoint}; config ${fleet.configFile}.`,
        `Demo site: ${fleet.nodes.filter((n) => n.site).map((n) => `${n.id} ${n.site}`).join(", ")}; its repository is ${fleet.demoRepo}.`,
        `In another terminal, from this directory: bosun nodes, bosun release --app demo --ref HEAD --wait, bosun rollback --app demo --wait,`,
        `bosun send probe --target all --wait, bosun events.`,
        fleet.balancer
          ? `Balancer: lb-1's HAProxy at ${fleet.balancer} in front of the web nodes (curl ${fleet.balancer}/ after a release); bosun lb status, bosun lb drain web-1, bosun lb enable web-1.`
          : "Balancer: lb-1 runs no HAProxy (install haproxy to put one in front of the web nodes).",
        ...(fleet.nodes.some((n) => n.roles.includes("db"))
          ? ["Databases: db-1 (primary), db-2 (replica, backups): bosun backup now --wait, bosun backup list, bosun backup drill --wait, bosun restore --node db-2 --replica-of primary --wait."]
          : []),
        `Ctrl-C stops them all.`,
        "",
      ].join("\n"),
    );
    const signal = await untilSignal();
    process.stdout.write(`${signal}: stopping the fleet...\n`);
    await fleet.close();
    process.stdout.write("Fleet stopped.\n");
  });

program
  .command("agent")
  .description("Run this node's agent: identity from --node-id/--role locally, from EC2 metadata and tags on AWS")
  .option("--node-id <id>", "this node's id (default: the EC2 instance id)")
  .option("--role <role>", "a role of this node: web, db or balancer (repeat or comma separate)", collect)
  .option("--sync-once", "run this node's boot step (web: bring its apps to their desired releases), then exit; systemd runs it before the node's server starts")
  .option("--retry-for <seconds>", "with --sync-once, keep trying this long when the sync fails (at boot the network may come late)", positiveInt("--retry-for"), 300)
  .option("--json", "with --sync-once, print the result as JSON")
  .addHelpText("after", "\nStops cleanly on SIGTERM: no new commands, in-flight jobs finish or checkpoint within shutdownDeadlineSeconds, exit 0.")
  .action(async (opts: { nodeId?: string; role?: string[]; syncOnce?: boolean; retryFor: number; json?: boolean }) => {
    const { startAgent, resolveIdentity } = await import("./commands/agent.ts");
    if (opts.syncOnce) {
      const { syncOnce, renderSync } = await import("./commands/sync.ts");
      const abort = new AbortController();
      void untilSignal().then(() => abort.abort());
      const result = await withContext(
        (ctx) => syncOnce(ctx, { identify: () => resolveIdentity(ctx, { nodeId: opts.nodeId, roles: opts.role }), retryForSeconds: opts.retryFor }, abort.signal),
        { name: "sync", stream: "stderr" },
      );
      await print(opts.json, result, renderSync);
      return;
    }
    const { createContext } = await import("./context.ts");
    const ctx = createContext(globals(), {}, { name: "agent" });
    try {
      const { agent } = await startAgent(ctx, { nodeId: opts.nodeId, roles: opts.role });
      const how = await Promise.race([untilSignal().then((s) => `signal ${s}`), agent.stopped]);
      ctx.logger.info({ how }, "agent stopping");
      await agent.close();
    } finally {
      ctx.logger.flush();
      ctx.close();
    }
  });

program
  .command("coordinator")
  .description("Run the coordinator: fleet state from events, lost-node detection, scheduled commands")
  .action(async () => {
    const { createContext } = await import("./context.ts");
    const { startCoordinator } = await import("./commands/coordinator.ts");
    const ctx = createContext(globals(), {}, { name: "coordinator" });
    try {
      const coordinator = await startCoordinator(ctx);
      await untilSignal();
      await coordinator.close();
    } finally {
      ctx.logger.flush();
      ctx.close();
    }
  });

program
  .command("nodes")
  .description("List the fleet's nodes with their roles, status and last heartbeat")
  .option("--role <role>", "only nodes with this role")
  .option("--all", "include decommissioned nodes")
  .option("--json", "print the result as JSON")
  .action(async (opts: { role?: string; all?: boolean; json?: boolean }) => {
    const { nodes, renderNodes } = await import("./commands/nodes.ts");
    await print(opts.json, await withContext((ctx) => nodes(ctx, opts)), renderNodes);
  });

const keys = program.command("keys").description("Manage the Ed25519 keys that sign commands and events");
keys
  .command("generate")
  .description("Generate a key pair and add its public key, with what it may send, to the trust file")
  .requiredOption("--id <id>", "the key's name, as issuers and the trust file know it (e.g. ci, oncall)")
  .requiredOption("--allow <types>", "command types it may send, comma separated: release, probe, * for all, event:* for events", collect)
  .option("--dir <dir>", "where to write <id>.key and <id>.pub", ".bosun/keys")
  .option("--trust <file>", "trust file to add the public key to", ".bosun/keys/trust.json")
  .option("--force", "replace an existing key of that name")
  .option("--json", "print the result as JSON")
  .action(async (opts: { id: string; allow: string[]; dir: string; trust: string; force?: boolean; json?: boolean }) => {
    const { keysGenerate, renderKeys } = await import("./commands/keys.ts");
    await print(opts.json, await keysGenerate({ id: opts.id, allow: opts.allow, dir: opts.dir, trustFile: opts.trust, force: Boolean(opts.force) }), renderKeys);
  });

program
  .command("send")
  .description("Sign and publish a command; with --wait, follow it on every target node")
  .argument("<type>", "command type, e.g. probe")
  .requiredOption("--target <target>", "who runs it: all, role:web, node:i-0abc (comma separated)")
  .option("--payload <json>", "the command's payload as JSON", "{}")
  .option("--wait", "wait until every target node has answered; exit 1 naming nodes that failed or did not answer")
  .option("--timeout <seconds>", "how long --wait waits", positiveInt("--timeout"), 60)
  .option("--json", "print the result as JSON")
  .action(async (type: string, opts: { target: string; payload: string; wait?: boolean; timeout: number; json?: boolean }) => {
    const { send, renderSend } = await import("./commands/send.ts");
    const view = await progress(Boolean(opts.json), `${type} → ${opts.target}`);
    const result = await withContext((ctx) =>
      send(ctx, { type, target: opts.target, payload: opts.payload, wait: Boolean(opts.wait), timeoutSeconds: opts.timeout, onProgress: view.update }),
    );
    view.done();
    await print(opts.json, result, (r) => renderSend(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

program
  .command("release")
  .description("Release a commit of an app to every web node: prepare everywhere, then swap together, health-gated")
  .requiredOption("--app <app>", "the app, as named in the nodes' apps setting")
  .requiredOption("--ref <ref>", "branch, tag, HEAD or commit; resolved here to one commit")
  .option("--repo <url>", "repository (default: the app's last release, then its first allowed repo)")
  .option("--wait", "run the rollout in phases and wait for every node; exit 1 naming nodes that failed")
  .option("--batch <n|n%>", "with --wait, switch this many nodes (or this share of them) at a time")
  .option("--max-failures <n>", "with --wait, failures tolerated before the rollout stops and switched nodes go back", positiveInt("--max-failures"), 0)
  .option("--timeout <seconds>", "how long each phase waits for nodes", positiveInt("--timeout"), 300)
  .option("--swap-delay <ms>", "with --wait, how far ahead of sending `activate` every node swaps (default 200 ms + 10 ms a node)", positiveInt("--swap-delay"))
  .option("--drain", "with --wait, node by node (or --batch at a time): drain it on every balancer, swap it, put it back")
  .option("--drain-timeout <seconds>", "with --drain, how long balancers wait for a node's sessions (default balancer.drainTimeoutSeconds)", positiveInt("--drain-timeout"))
  .option("--json", "print the result as JSON")
  .action(async (opts: { app: string; ref: string; repo?: string; wait?: boolean; batch?: string; maxFailures: number; timeout: number; swapDelay?: number; drain?: boolean; drainTimeout?: number; json?: boolean }) => {
    const { release, renderRelease } = await import("./commands/release.ts");
    const json = Boolean(opts.json);
    let view: { update(nodes: NodeProgress[]): void; done(): void } | undefined;
    let phase = "";
    const { progressView } = await import("./live.ts");
    const result = await withContext((ctx) =>
      release(ctx, {
        app: opts.app,
        ref: opts.ref,
        repo: opts.repo,
        wait: Boolean(opts.wait),
        batch: opts.batch,
        maxFailures: opts.maxFailures,
        timeoutSeconds: opts.timeout,
        swapDelayMs: opts.swapDelay,
        drain: Boolean(opts.drain),
        drainTimeoutSeconds: opts.drainTimeout,
        onProgress: (p, nodes) => {
          if (p !== phase) {
            view?.done();
            phase = p;
            view = progressView({ json, title: `${opts.app}: ${p}` });
          }
          view?.update(nodes);
        },
      }),
    );
    view?.done();
    await print(json, result, renderRelease);
    if (!result.ok) process.exitCode = EXIT.failed;
  });

program
  .command("rollback")
  .description("Swap every web node of an app back to a kept release (no fetch)")
  .requiredOption("--app <app>", "the app")
  .option("--to <commit>", "the release to return to (default: the one desired before the current)")
  .option("--wait", "wait for every web node; exit 1 naming nodes that failed")
  .option("--timeout <seconds>", "how long --wait waits", positiveInt("--timeout"), 120)
  .option("--json", "print the result as JSON")
  .action(async (opts: { app: string; to?: string; wait?: boolean; timeout: number; json?: boolean }) => {
    const { rollback, renderRollback } = await import("./commands/rollback.ts");
    const view = await progress(Boolean(opts.json), `${opts.app}: rollback`);
    const result = await withContext((ctx) => rollback(ctx, { app: opts.app, to: opts.to, wait: Boolean(opts.wait), timeoutSeconds: opts.timeout, onProgress: view.update }));
    view.done();
    await print(opts.json, result, (r) => renderRollback(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

program
  .command("releases")
  .description("Show an app's desired release and what each web node serves")
  .requiredOption("--app <app>", "the app")
  .option("--json", "print the result as JSON")
  .action(async (opts: { app: string; json?: boolean }) => {
    const { releases, renderReleases } = await import("./commands/releases.ts");
    await print(opts.json, await withContext((ctx) => releases(ctx, opts)), renderReleases);
  });

const backup = program
  .command("backup")
  .description("Snapshots of the db nodes' databases in S3: take, list, show, verify, prune, drill")
  .addHelpText(
    "after",
    `
A snapshot counts only when its manifest (every object's SHA-256 and size, the binary-log
coordinates, per-table checksums) and its completion record, both signed by the node that took
it, are in the bucket. Backups run on the replica marked for backups (db.backupReplica) unless
--node names another; the primary is never paused.`,
  );

backup
  .command("now")
  .description("Take a snapshot now (one backup runs at a time: a second request waits for it and reports its snapshot)")
  .option("--node <id>", "the db node to take it on (default: the replica marked for backups, else the primary)")
  .option("--kind <kind>", "logical (mariadb-dump), physical (mariabackup) or ebs (EC2 snapshot of the data volume); default db.backup.kind")
  .option("--reason <text>", "why, for the record")
  .option("--wait", "follow the backup to its end; exit 1 if it failed")
  .option("--timeout <seconds>", "how long --wait waits", positiveInt("--timeout"), 6 * 3600)
  .option("--json", "print the result as JSON")
  .action(async (opts: { node?: string; kind?: string; reason?: string; wait?: boolean; timeout: number; json?: boolean }) => {
    const { backupNow, renderOperation } = await import("./commands/backup.ts");
    if (opts.kind && !["logical", "physical", "ebs"].includes(opts.kind)) throw new InvalidArgumentError(`--kind must be logical, physical or ebs, received ${JSON.stringify(opts.kind)}`);
    const view = await progress(Boolean(opts.json), "backup-now");
    const result = await withContext((ctx) =>
      backupNow(ctx, { node: opts.node, kind: opts.kind as "logical" | "physical" | "ebs" | undefined, reason: opts.reason, wait: Boolean(opts.wait), timeoutSeconds: opts.timeout, onProgress: view.update }),
    );
    view.done();
    await print(opts.json, result, (r) => renderOperation(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

backup
  .command("list")
  .description("List the snapshots in the bucket, newest first, complete or not (and why not)")
  .option("--json", "print the result as JSON")
  .action(async (opts: { json?: boolean }) => {
    const { listBackups, renderList } = await import("./commands/backup.ts");
    await print(opts.json, await withContext((ctx) => listBackups(ctx)), renderList);
  });

backup
  .command("show")
  .description("Show a snapshot's manifest, completion and drills")
  .argument("<snapshot>", "the snapshot's id (bosun backup list)")
  .option("--json", "print the result as JSON")
  .action(async (id: string, opts: { json?: boolean }) => {
    const { showBackup, renderShow } = await import("./commands/backup.ts");
    await print(opts.json, await withContext((ctx) => showBackup(ctx, id)), renderShow);
  });

backup
  .command("verify")
  .description("Re-read every object of a snapshot and check its size and SHA-256 against the manifest; exit 1 if any differs")
  .argument("[snapshot]", "the snapshot's id (default: the latest complete one)")
  .option("--json", "print the result as JSON")
  .action(async (id: string | undefined, opts: { json?: boolean }) => {
    const { verifyBackup, renderVerify } = await import("./commands/backup.ts");
    const result = await withContext((ctx) => verifyBackup(ctx, id, (key) => !opts.json && process.stderr.write(`checking ${key}...\n`)));
    await print(opts.json, result, renderVerify);
    if (!result.ok) process.exitCode = EXIT.failed;
  });

const binlog = backup.command("binlog").description("The binary-log archive the primaries' agents ship (db.shipping)");
binlog
  .command("verify")
  .description("Check a server's binary-log chain: index entries signed and in sequence, offsets continuous across files, every segment's SHA-256; exit 1 on any break")
  .option("--server <uuid-epoch>", "one server history (default: every history in the bucket)")
  .option("--json", "print the result as JSON")
  .action(async (opts: { server?: string; json?: boolean }) => {
    const { verifyBinlog, renderBinlogVerify } = await import("./commands/backup.ts");
    const result = await withContext((ctx) => verifyBinlog(ctx, opts.server));
    await print(opts.json, result, renderBinlogVerify);
    if (!result.ok) process.exitCode = EXIT.failed;
  });

backup
  .command("prune")
  .description("Remove snapshots outside retention (backups.retention: hourly, daily, weekly, monthly counts and the restore window)")
  .option("--dry-run", "only say what would be removed and why")
  .option("--json", "print the result as JSON")
  .action(async (opts: { dryRun?: boolean; json?: boolean }) => {
    const { pruneBackups, renderPrune } = await import("./commands/backup.ts");
    await print(opts.json, await withContext((ctx) => pruneBackups(ctx, { dryRun: Boolean(opts.dryRun) })), renderPrune);
  });

backup
  .command("drill")
  .description("Restore a snapshot into a scratch server, compare every table's checksum with the manifest, record the RTO")
  .option("--node <id>", "the db node to run it on (default: the replica marked for backups, else the primary)")
  .option("--snapshot <id>", "the snapshot (default: the latest complete logical or physical one)")
  .option("--wait", "follow the drill to its end; exit 1 if it failed")
  .option("--timeout <seconds>", "how long --wait waits", positiveInt("--timeout"), 6 * 3600)
  .option("--json", "print the result as JSON")
  .action(async (opts: { node?: string; snapshot?: string; wait?: boolean; timeout: number; json?: boolean }) => {
    const { drillNow, renderOperation } = await import("./commands/backup.ts");
    const view = await progress(Boolean(opts.json), "drill");
    const result = await withContext((ctx) => drillNow(ctx, { node: opts.node, snapshot: opts.snapshot, wait: Boolean(opts.wait), timeoutSeconds: opts.timeout, onProgress: view.update }));
    view.done();
    await print(opts.json, result, (r) => renderOperation(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

program
  .command("restore")
  .description("Restore a snapshot into a db node's server, every object checked before the server is touched; or restore to a point in time")
  .requiredOption("--node <id>", "the db node whose server is replaced")
  .option("--snapshot <id>", "the snapshot (default: the latest complete logical or physical one; with --to, the newest before the point)")
  .option("--to <point>", "then replay the shipped binary log up to this point, not applying the transaction at it: an RFC 3339 time, a GTID, FILE:POSITION, or latest")
  .option("--dry-run", "with --to: print the plan (snapshot, segments, bytes, estimated time) and send nothing")
  .option("--promote", "then make the node the cluster's primary: it ships under a new epoch, a db-primary event names it, and the old primary stops shipping")
  .option("--replica-of <primary|host:port>", "then replicate from this server to catch up (primary: the db node reporting itself primary)")
  .option("--wait", "follow the restore to its end; exit 1 if it failed")
  .option("--timeout <seconds>", "how long --wait waits", positiveInt("--timeout"), 6 * 3600)
  .option("--json", "print the result as JSON")
  .addHelpText(
    "after",
    `
A physical snapshot replaces the data directory (the old one is put back if anything fails); a
logical one is loaded into the running server (if that fails part-way, the server is stopped: its
data is half-restored). The server keeps its own server id.

Point in time (--to): the plan is made from the signed binary-log index before anything is sent:
the newest snapshot whose data stands before the point, and every segment from its coordinates to
the point, each following the one before. The node downloads the segments and checks each one's
SHA-256, then restores the snapshot and replays up to the point. The transaction at the point is
not applied ("just before the DROP"):
  --to 2026-12-02T09:14:00Z   stops before the first transaction the log stamps at or after that
                              second (the binary log keeps whole seconds)
  --to 0-1-4711               stops before the transaction with that GTID
  --to mariadb-bin.000042:1234  stops before the transaction holding that position
  --to latest                 replays every whole transaction shipped
Find the GTID of a bad statement with mariadb-binlog on the primary, or bosun restore --dry-run.

--promote makes the restored node the cluster's primary (a signed state/db/primary.json record,
generation by generation, and a db-primary event); any other primary stops shipping its binary
log within seconds and raises DB_NOT_PRIMARY. Point the application at the new primary yourself.`,
  )
  .action(async (opts: { node: string; snapshot?: string; to?: string; dryRun?: boolean; promote?: boolean; replicaOf?: string; wait?: boolean; timeout: number; json?: boolean }) => {
    const { planRestore, restoreNode, renderOperation, renderPlan } = await import("./commands/backup.ts");
    if (opts.dryRun) {
      if (!opts.to) throw new InvalidArgumentError("--dry-run plans a point-in-time restore: give --to as well");
      const plan = await withContext((ctx) => planRestore(ctx, { to: opts.to!, ...(opts.snapshot ? { snapshot: opts.snapshot } : {}) }));
      await print(opts.json, plan, renderPlan);
      return;
    }
    const view = await progress(Boolean(opts.json), `restore → ${opts.node}`);
    const result = await withContext((ctx) =>
      restoreNode(ctx, { node: opts.node, snapshot: opts.snapshot, replicaOf: opts.replicaOf, to: opts.to, promote: Boolean(opts.promote), wait: Boolean(opts.wait), timeoutSeconds: opts.timeout, onProgress: view.update }),
    );
    view.done();
    await print(opts.json, result, (r) => renderOperation(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

const db = program.command("db").description("The database cluster: primary, replicas, shipping and the restore window");

db.command("status")
  .description("Primary and replicas (threads, lag), binary-log shipping lag, the archive, the latest snapshot and the oldest point a restore can reach")
  .option("--json", "print the result as JSON")
  .addHelpText(
    "after",
    `
Node state is from the nodes' heartbeats (every heartbeatSeconds); a replica's agent also raises
an alert event as soon as a thread stops or its lag passes db.health.lagAlertSeconds. The archive
and snapshots are read from S3 as they are now.`,
  )
  .action(async (opts: { json?: boolean }) => {
    const { dbStatus, renderDbStatus } = await import("./commands/db.ts");
    await print(opts.json, await withContext((ctx) => dbStatus(ctx)), renderDbStatus);
  });

const lb = program
  .command("lb")
  .description("The balancers in front of the web nodes: status, drain and enable a web node")
  .addHelpText(
    "after",
    `
Each balancer node runs HAProxy and adds and removes web nodes through its runtime API as they
come and go (no reloads). A drain stops new requests to a node, waits for its sessions to
finish (or balancer.drainTimeoutSeconds), then holds it out of rotation until enabled again.`,
  );

lb.command("status")
  .description("The balancers, and each one's backends with their state (ready, drain, maint) and health, from their last heartbeat")
  .option("--json", "print the result as JSON")
  .action(async (opts: { json?: boolean }) => {
    const { balancerStatus, renderStatus } = await import("./commands/lb.ts");
    await print(opts.json, await withContext((ctx) => balancerStatus(ctx)), renderStatus);
  });

lb.command("drain")
  .description("Drain a web node on every balancer and wait until its sessions have finished; exit 1 if a balancer failed")
  .argument("<node>", "the web node's id")
  .option("--drain-timeout <seconds>", "how long balancers wait for its sessions (default balancer.drainTimeoutSeconds)", positiveInt("--drain-timeout"))
  .option("--timeout <seconds>", "how long to wait for the balancers' answers", positiveInt("--timeout"), 300)
  .option("--no-wait", "only send the command")
  .option("--json", "print the result as JSON")
  .action(async (node: string, opts: { drainTimeout?: number; timeout: number; wait: boolean; json?: boolean }) => {
    const { drainBackend, renderDrain } = await import("./commands/lb.ts");
    const view = await progress(Boolean(opts.json), `lb-drain ${node}`);
    const result = await withContext((ctx) => drainBackend(ctx, { node, drainTimeoutSeconds: opts.drainTimeout, wait: opts.wait, timeoutSeconds: opts.timeout, onProgress: view.update }));
    view.done();
    await print(opts.json, result, (r) => renderDrain(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

lb.command("enable")
  .description("Put a drained web node back into rotation on every balancer")
  .argument("<node>", "the web node's id")
  .option("--timeout <seconds>", "how long to wait for the balancers' answers", positiveInt("--timeout"), 60)
  .option("--no-wait", "only send the command")
  .option("--json", "print the result as JSON")
  .action(async (node: string, opts: { timeout: number; wait: boolean; json?: boolean }) => {
    const { enableBackend, renderDrain } = await import("./commands/lb.ts");
    const view = await progress(Boolean(opts.json), `lb-enable ${node}`);
    const result = await withContext((ctx) => enableBackend(ctx, { node, wait: opts.wait, timeoutSeconds: opts.timeout, onProgress: view.update }));
    view.done();
    await print(opts.json, result, (r) => renderDrain(r, { withTable: !liveView() }));
    if (result.result && !result.result.ok) process.exitCode = EXIT.failed;
  });

program
  .command("db-server", { hidden: true })
  .description("Start or stop a local MariaDB server of `bosun dev` (a dev db node's stop and start commands)")
  .argument("<action>", "start or stop")
  .argument("<dir>", "the server's directory")
  .argument("[port]", "with start: its port")
  .argument("[server-id]", "with start: its server id")
  .action(async (action: string, dir: string, port?: string, serverId?: string) => {
    const { startServer, stopServer } = await import("./devdb.ts");
    if (action === "stop") return stopServer(dir);
    if (action === "start" && port && serverId) return startServer(dir, Number(port), Number(serverId));
    throw new InvalidArgumentError("usage: bosun db-server start <dir> <port> <server-id> | stop <dir>");
  });

program
  .command("events")
  .description("Follow events on the bus (acks, progress, results, refusals, node-up/down, heartbeats) until Ctrl-C")
  .option("--command <id>", "only events about this command")
  .option("--type <type>", "only events of this type (repeat or comma separate)", collect)
  .option("--json", "print each event as one JSON line")
  .action(async (opts: { command?: string; type?: string[]; json?: boolean }) => {
    const { events, renderEvent } = await import("./commands/events.ts");
    const abort = new AbortController();
    void untilSignal().then(() => abort.abort());
    await withContext((ctx) =>
      events(ctx, {
        correlationId: opts.command,
        types: opts.type,
        signal: abort.signal,
        onEvent: (item) => process.stdout.write(`${opts.json ? JSON.stringify(item.ok ? item.envelope : item.refusal) : renderEvent(item)}\n`),
      }),
    );
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Bosun's errors carry a stable code (core/errors.ts); read it without loading the module.
  const code = (error as { code?: unknown }).code;
  const exit = code === "BOSUN_CONFIG" ? EXIT.usage : code === "BOSUN_COMMAND_FAILED" ? EXIT.failed : EXIT.error;
  process.stderr.write(`bosun: ${error instanceof Error ? error.message : String(error)}\n`);
  if (!(typeof code === "string" && code.startsWith("BOSUN_")) && process.env["BOSUN_DEBUG"]) process.stderr.write(`${(error as Error).stack}\n`);
  process.exit(exit);
}
process.exit(process.exitCode ?? EXIT.ok);
