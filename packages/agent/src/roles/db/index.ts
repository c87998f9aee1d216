import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { abortUpload, backupKeys, pendingUploads } from "@bosun/aws";
import { backupNowContract, drillContract, errorMessage, restoreContract, type DbReport } from "@bosun/core";
import { defineCommand, type CommandDefinition, type CommandOutcome } from "../../command.ts";
import type { Role, RoleServices } from "../../role.ts";
import { backupLeaseKey, describeError, takeBackup } from "./backup.ts";
import { runDrill } from "./drill.ts";
import type { DatabaseEngine } from "./engine.ts";
import { MariaDbEngine } from "./mariadb.ts";
import { restoreToPoint } from "./pitr.ts";
import { restoreSnapshot } from "./restore.ts";
import { BinlogShipper } from "./shipper.ts";
import { ReplicationWatch } from "./health.ts";
import { notPrimary, promote } from "./primary.ts";
import { ZeroLossAcker } from "./zero-loss.ts";

/** A handler's expected failure (a tool, S3, a refused snapshot) as a failed outcome with its code. */
async function outcome(work: () => Promise<unknown>): Promise<CommandOutcome> {
  try {
    return { status: "done", result: await work() };
  } catch (error) {
    return { status: "failed", ...describeError(error) };
  }
}

function commands(engine: DatabaseEngine, shipper: BinlogShipper): CommandDefinition<never>[] {
  // Each is reported failed if the agent died during it: a backup is abandoned (its upload aborted
  // at the next start), a restore undone by recover(), a drill's scratch server removed.
  const backupNow = defineCommand(backupNowContract, {
    onInterrupted: "fail",
    handle: (ctx) =>
      outcome(() => takeBackup(ctx.services, engine, { kind: ctx.payload.kind ?? ctx.settings.db!.backup.kind, signal: ctx.signal, progress: ctx.progress })),
  });
  const restore = defineCommand(restoreContract, {
    onInterrupted: "fail",
    handle: (ctx) =>
      // Shipping pauses while the server's data (and binary log) is replaced, and goes on under the new epoch.
      outcome(async () => {
        const restored = await shipper.pausedWhile(() =>
          ctx.payload.to
            ? restoreToPoint(ctx.services, engine, { snapshot: ctx.payload.snapshot, to: ctx.payload.to, signal: ctx.signal, progress: ctx.progress })
            : restoreSnapshot(ctx.services, engine, { snapshot: ctx.payload.snapshot, ...(ctx.payload.replicaOf ? { replicaOf: ctx.payload.replicaOf } : {}), signal: ctx.signal, progress: ctx.progress }),
        );
        if (!ctx.payload.promote) return restored;
        // The restore started a new epoch: the new primary ships under it, and the record names it.
        const name = await engine.archiveName();
        const primary = await promote(ctx.services, `${name.uuid}-${name.epoch}`);
        return { ...restored, promoted: primary, ...(ctx.settings.db!.shipping.enabled === "off" ? { warning: "db.shipping.enabled is off on this node: its binary log is not shipped" } : {}) };
      }),
  });
  const drill = defineCommand(drillContract, {
    onInterrupted: "fail",
    handle: (ctx) => outcome(() => runDrill(ctx.services, engine, { ...(ctx.payload.snapshot ? { snapshot: ctx.payload.snapshot } : {}), signal: ctx.signal, progress: ctx.progress })),
  });
  return [backupNow, restore, drill] as CommandDefinition<never>[];
}

/**
 * The db role: backups of this node's database streamed to S3 (backup-now), restores into its
 * server (restore), drills that prove a snapshot restores (drill), and its binary log shipped to
 * S3 as it is written (db.shipping). It reports its server's
 * place in replication with every heartbeat, and at start undoes what a run that died left
 * half-done: a restore, a drill's scratch server, a multipart upload.
 */
export function dbRole(services: RoleServices): Role {
  const db = services.settings.db;
  if (!db) throw new Error("the db role needs db settings (the config's db section, or BOSUN_DB)");
  const engine = new MariaDbEngine({ logger: services.logger.child({ role: "db" }) }, { db, stateDir: services.settings.stateDir });
  const log = services.logger.child({ role: "db" });
  let acker: ZeroLossAcker | undefined;
  const shipper = new BinlogShipper({ services, engine, fence: () => notPrimary(services), written: () => acker?.written() }, db.shipping);
  if (db.shipping.zeroLoss.enabled && db.shipping.enabled !== "off") acker = new ZeroLossAcker({ services, server: engine, archive: shipper }, db.shipping.zeroLoss);
  const watch = new ReplicationWatch({ services, engine }, db.health);
  return {
    name: "db",
    commands: commands(engine, shipper),
    async onSubscribed() {
      await recoverRestore(services, engine).catch((error: unknown) => log.error({ err: error }, "could not undo an interrupted restore"));
      await removeScratch(engine).catch((error: unknown) => log.warn({ err: error }, "could not remove a drill's scratch directories"));
      await abortOrphanUploads(services).catch((error: unknown) => log.warn({ err: error }, "could not look for abandoned backup uploads"));
      await releaseStaleLease(services).catch((error: unknown) => log.warn({ err: error }, "could not look at the backup lease"));
      // After the recovery above: a restore undone must not race the shipper for the server's binary log.
      shipper.start();
      acker?.start();
      watch.start();
    },
    close: async () => {
      // The acknowledgements stop first: the server then stops waiting on this agent after its timeout.
      await acker?.close();
      await Promise.all([shipper.close(), watch.close()]);
    },
    async report(): Promise<DbReport> {
      try {
        const server = await engine.describe();
        return {
          server: { id: server.id, uuid: server.uuid, version: server.version },
          role: server.role,
          backupReplica: db.backupReplica,
          ...(db.advertise ? { address: db.advertise } : {}),
          ...(server.replication ? { replication: server.replication } : {}),
          shipping: shipper.status(),
        };
      } catch (error) {
        return { role: "unknown", backupReplica: db.backupReplica, problem: errorMessage(error).slice(0, 300) };
      }
    },
  };
}

async function recoverRestore(services: RoleServices, engine: DatabaseEngine): Promise<void> {
  const what = await engine.recover();
  if (!what) return;
  services.logger.warn({ recovered: what }, "undid an interrupted restore");
  await services.events.emit("alert", `restore-recovery-${services.node.id}-${Date.now()}`, { node: services.node, severity: "critical", code: "RESTORE_INTERRUPTED", message: what });
}

/** Scratch servers of drills a dead agent left: stopped (by their pid files) and removed. */
async function removeScratch(engine: DatabaseEngine): Promise<void> {
  const scratch = await engine.scratchDir();
  for (const entry of await readdir(scratch)) {
    if (!entry.startsWith("drill-") && !entry.startsWith("restore-") && !entry.startsWith("mariabackup-") && !entry.startsWith("pitr-")) continue;
    const pid = Number.parseInt(await readFile(join(scratch, entry, "scratch.pid"), "utf8").catch(() => ""), 10);
    if (pid > 0) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await rm(join(scratch, entry), { recursive: true, force: true });
  }
}

/** A backup lease this node held when its agent died: given up at once, not after it expires. */
async function releaseStaleLease(services: RoleServices): Promise<void> {
  const current = await services.store.getVersioned<{ holder?: string }>(backupLeaseKey);
  if (!current?.value.holder?.startsWith(`${services.node.id}/`)) return;
  await services.store.delete(backupLeaseKey, { ifMatch: current.etag });
  services.logger.warn({ holder: current.value.holder }, "gave up the backup lease an earlier run of this agent held");
}

/** Multipart uploads of this node's snapshots that a dead agent left open: aborted, so no parts linger. */
async function abortOrphanUploads(services: RoleServices): Promise<void> {
  const mine = new RegExp(`^${backupKeys.snapshots}[0-9]{8}T[0-9]{6}Z-${services.node.id}-(logical|physical|ebs)-[0-9a-f]{6}/`);
  for (const upload of await pendingUploads(services.clients, services.settings.bucket, backupKeys.snapshots)) {
    if (!mine.test(upload.key)) continue;
    await abortUpload(services.clients, services.settings.bucket, upload);
    services.logger.warn({ key: upload.key, initiated: upload.initiated }, "aborted the upload of a backup an earlier run of this agent did not finish");
  }
}
