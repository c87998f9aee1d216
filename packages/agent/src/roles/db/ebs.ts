import { abortableDelay, createVolumeSnapshot, describeVolumeSnapshot } from "@bosun/aws";
import type { Coordinates, DbSettings } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { BackupFailed, type BackupRequest } from "./backup.ts";
import type { DatabaseEngine } from "./engine.ts";

const POLL_MS = 5_000;

/**
 * An EBS snapshot of the volume that holds the data directory. EBS snapshots are point-in-time
 * at the CreateSnapshot call and crash-consistent for one volume; the server is held under
 * FLUSH TABLES WITH READ LOCK only for that call, so non-InnoDB tables are consistent too and the
 * coordinates are exact. The snapshot counts once EC2 reports it `completed`.
 */
export async function ebsSnapshot(services: RoleServices, engine: DatabaseEngine, db: DbSettings, snapshot: string, request: BackupRequest, signal: AbortSignal): Promise<{ coordinates: Coordinates; ebs: { snapshotId: string; volumeId: string }; lockMs: number }> {
  const volumeId = db.backup.ebsVolumeId;
  if (!volumeId) throw new BackupFailed("BACKUP_NO_VOLUME", "an EBS snapshot needs the data directory's volume: set db.backup.ebsVolumeId");
  const lock = await engine.lock();
  const locked = Date.now();
  let snapshotId: string | undefined;
  try {
    snapshotId = await createVolumeSnapshot(services.clients, {
      volumeId,
      description: `Bosun snapshot ${snapshot} of cluster ${services.settings.cluster}`,
      tags: { Name: `bosun-${services.settings.cluster}-${snapshot}`, "bosun:cluster": services.settings.cluster, "bosun:snapshot": snapshot, "bosun:node": services.node.id },
      signal,
    });
  } finally {
    await lock.unlock();
  }
  const lockMs = Date.now() - locked;
  if (!snapshotId) throw new BackupFailed("BACKUP_EBS", `EC2 did not return a snapshot id for volume ${volumeId}`);
  services.logger.info({ snapshotId, volumeId, lockMs }, "EBS snapshot started; writes were blocked only for the call");
  for (;;) {
    const state = await describeVolumeSnapshot(services.clients, snapshotId, signal);
    if (state.state === "completed") break;
    if (state.state === "error") throw new BackupFailed("BACKUP_EBS", `EBS snapshot ${snapshotId} of ${volumeId} failed: ${state.message ?? "no reason given"}`);
    const percent = Number.parseInt(state.progress ?? "0", 10);
    await request.progress(`EBS snapshot ${snapshotId}: ${state.state} ${state.progress ?? ""}`.trim(), Number.isFinite(percent) ? Math.min(0.99, percent / 100) : undefined);
    await abortableDelay(POLL_MS, signal);
    if (signal.aborted) throw new BackupFailed("BACKUP_INTERRUPTED", `stopped while EBS snapshot ${snapshotId} was still ${state.state}; it is tagged bosun:snapshot=${snapshot}`);
  }
  return { coordinates: lock.coordinates, ebs: { snapshotId, volumeId }, lockMs };
}
