import { statfs } from "node:fs/promises";
import { dirname } from "node:path";
import { pipeline, type Readable } from "node:stream";
import { BackupError, VerifyingDigest, downloadStream, listSnapshots, readSnapshot, verifyObject } from "@bosun/aws";
import { errorMessage, type BackupManifest, type Coordinates } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { BackupFailed, mib } from "./backup.ts";
import { Decryptor, decompressor, identity, loadBackupKey, type BackupKey } from "./codec.ts";
import type { DatabaseEngine } from "./engine.ts";

const PROGRESS_MS = 5_000;

export interface Stage {
  signal: AbortSignal;
  progress(message: string, fraction?: number): Promise<void>;
}

/**
 * A snapshot this node may use: complete (its manifest and completion record signed by the node
 * that took it, and naming each other), of a kind that can be streamed, and readable with this
 * node's key. Checked before anything is downloaded.
 */
export async function usableSnapshot(services: RoleServices, wanted: string | undefined, options: { kinds: readonly string[] }): Promise<{ manifest: BackupManifest; key: BackupKey | undefined }> {
  const deps = { clients: services.clients, bucket: services.settings.bucket, store: services.store, keys: services.nodeKeyDirectory() };
  let manifest: BackupManifest;
  if (wanted) {
    const status = await readSnapshot(deps, wanted);
    if (status.status !== "complete") throw new BackupFailed(status.status === "refused" ? "SNAPSHOT_REFUSED" : "SNAPSHOT_INCOMPLETE", `snapshot ${wanted} cannot be used: ${status.problem}`);
    manifest = status.manifest;
  } else {
    const latest = (await listSnapshots(deps)).find((s) => s.status === "complete" && options.kinds.includes(s.manifest.kind));
    if (!latest || latest.status !== "complete") throw new BackupFailed("SNAPSHOT_NONE", `there is no complete ${options.kinds.join(" or ")} snapshot in s3://${services.settings.bucket}/backups/`);
    manifest = latest.manifest;
  }
  if (!options.kinds.includes(manifest.kind)) {
    throw new BackupFailed(
      "SNAPSHOT_KIND",
      manifest.kind === "ebs"
        ? `snapshot ${manifest.snapshot} is EBS snapshot ${manifest.ebs?.snapshotId}: create a volume from it, attach it as the data directory and start the server (its coordinates: ${manifest.coordinates.file}:${manifest.coordinates.position}, GTID ${manifest.coordinates.gtid})`
        : `snapshot ${manifest.snapshot} is ${manifest.kind}; this needs ${options.kinds.join(" or ")}`,
    );
  }
  let key: BackupKey | undefined;
  if (manifest.encryption) {
    const file = services.settings.db?.backup.encryptionKeyFile;
    if (!file) throw new BackupFailed("BACKUP_WRONG_KEY", `snapshot ${manifest.snapshot} is encrypted with key ${manifest.encryption.keyFingerprint}, and this node has no backup key (db.backup.encryptionKeyFile)`);
    key = await loadBackupKey(file);
    if (key.fingerprint !== manifest.encryption.keyFingerprint) {
      throw new BackupFailed("BACKUP_WRONG_KEY", `snapshot ${manifest.snapshot} is encrypted with key ${manifest.encryption.keyFingerprint}, and this node's backup key is ${key.fingerprint}`);
    }
  }
  return { manifest, key };
}

/** Reads every object of the snapshot whole and checks its size and SHA-256: nothing is touched until all of it is proven. */
export async function verifySnapshotObjects(services: RoleServices, manifest: BackupManifest, stage: Stage): Promise<void> {
  const total = manifest.objects.reduce((sum, o) => sum + o.bytes, 0);
  let done = 0;
  for (const object of manifest.objects) {
    await stage.progress(`checking ${object.key} (${mib(object.bytes)}) against its manifest`, total ? done / total / 2 : undefined);
    await verifyObject(services.clients, services.settings.bucket, object, stage.signal);
    done += object.bytes;
  }
}

/**
 * The snapshot's bytes as the database produced them: downloaded, checked against the manifest
 * as they stream (the stream fails at its end when they differ), decrypted and decompressed.
 */
export async function snapshotStream(services: RoleServices, manifest: BackupManifest, key: BackupKey | undefined, stage: Stage & { base: number }): Promise<Readable> {
  const object = manifest.objects[0];
  if (!object || manifest.objects.length !== 1) throw new BackupError("SNAPSHOT_CORRUPT", `snapshot ${manifest.snapshot} should hold one data object, its manifest names ${manifest.objects.length}`);
  const download = await downloadStream(services.clients, { bucket: services.settings.bucket, key: object.key, signal: stage.signal });
  if (!download) throw new BackupError("SNAPSHOT_OBJECT_MISSING", `${object.key} is missing`);
  let read = 0;
  let last = Date.now();
  const started = Date.now();
  download.body.on("data", (chunk: Buffer) => {
    read += chunk.length;
    if (Date.now() - last < PROGRESS_MS) return;
    last = Date.now();
    const rate = read / Math.max(0.001, (Date.now() - started) / 1000);
    void stage.progress(`${mib(read)} of ${mib(object.bytes)} restored (${mib(rate)}/s)`, Math.min(0.99, stage.base + (1 - stage.base) * (read / Math.max(1, object.bytes))));
  });
  return pipeline(
    download.body,
    new VerifyingDigest(object),
    key ? new Decryptor(key) : identity(),
    manifest.compression ? decompressor(manifest.compression) : identity(),
    () => undefined,
  );
}

export interface RestoreResult {
  snapshot: string;
  kind: string;
  durationMs: number;
  restoredBytes: number;
  coordinates: BackupManifest["coordinates"];
  /** Where the restored server replicates from, when asked. */
  replicaOf?: { host: string; port: number };
  serverId: number;
}

/**
 * Restores a snapshot into this node's server. Every object is read and checked whole before the
 * server is touched, the key is checked before anything is downloaded, and the disk must have
 * room. A physical restore replaces the data directory, and puts the old one back on any failure;
 * a logical load that fails part-way leaves data that must not serve, so the server is stopped
 * and the failure says so. Afterwards the server forgets its old replication, records where its
 * data stands, and, when asked, replicates from the primary to catch up.
 */
export async function restoreSnapshot(
  services: RoleServices,
  engine: DatabaseEngine,
  request: Stage & {
    snapshot?: string;
    replicaOf?: { host: string; port: number };
    /** Run once the snapshot is in (before the server settles): a replay to a point, returning where the data then stands. */
    replay?: () => Promise<Coordinates>;
  },
): Promise<RestoreResult> {
  const started = Date.now();
  const { manifest, key } = await usableSnapshot(services, request.snapshot, { kinds: ["logical", "physical"] });
  await engine.startIfHalfRestored();
  const server = await engine.describe();
  if (manifest.kind === "physical" && majorMinor(server.version) !== majorMinor(manifest.server.version)) {
    throw new BackupFailed("SNAPSHOT_VERSION", `snapshot ${manifest.snapshot} is a physical backup of MariaDB ${manifest.server.version}; this server runs ${server.version}: restore a logical snapshot instead`);
  }
  // A physical restore extracts into scratch, then moves into the data directory; a logical one grows the data directory.
  await roomFor(snapshotNeeds(manifest), manifest.kind === "physical" ? [await engine.scratchDir(), dirname(services.settings.db!.dataDir)] : [services.settings.db!.dataDir]);
  await verifySnapshotObjects(services, manifest, request);
  await request.progress(`snapshot ${manifest.snapshot} checked; restoring it into this server`, 0.5);
  const stream = await snapshotStream(services, manifest, key, { ...request, base: 0.5 });
  if (manifest.kind === "physical") {
    await engine.restorePhysical(stream, { signal: request.signal, scratchDir: await engine.scratchDir(), onStage: (stage) => void request.progress(stage) });
  } else {
    try {
      await engine.restoreLogical(stream, { signal: request.signal });
    } catch (error) {
      const stopped = await engine.stop().then(
        () => "the server was stopped, as its data is half-restored: restore again",
        (e: unknown) => `and the server could not be stopped (${errorMessage(e)}): its data is half-restored, do not send it traffic`,
      );
      throw new BackupFailed("RESTORE_FAILED", `loading snapshot ${manifest.snapshot} failed: ${errorMessage(error)}; ${stopped}`, { cause: error });
    }
  }
  let coordinates = manifest.coordinates;
  if (request.replay) {
    try {
      coordinates = await request.replay();
    } catch (error) {
      const stopped = await engine.stop().then(
        () => "the server was stopped, as its data stands part-way between the snapshot and the target: restore again",
        (e: unknown) => `and the server could not be stopped (${errorMessage(e)}): its data is part-way replayed, do not send it traffic`,
      );
      throw new BackupFailed("REPLAY_FAILED", `replaying the binary log onto snapshot ${manifest.snapshot} failed: ${errorMessage(error)}; ${stopped}`, { cause: error });
    }
  }
  await request.progress("restored; settling replication", 0.99);
  const serverId = await engine.settle(coordinates, request.replicaOf, { sourceServerId: manifest.server.id });
  return {
    snapshot: manifest.snapshot,
    kind: manifest.kind,
    durationMs: Date.now() - started,
    restoredBytes: manifest.sourceBytes,
    coordinates,
    ...(request.replicaOf ? { replicaOf: request.replicaOf } : {}),
    serverId,
  };
}

/** The room a snapshot's restore takes: the bytes the database produced. */
export function snapshotNeeds(manifest: BackupManifest): { what: string; bytes: number } {
  return { what: `snapshot ${manifest.snapshot}`, bytes: manifest.sourceBytes };
}

function majorMinor(version: string): string {
  return version.split(".").slice(0, 2).join(".");
}

/** Refuses before the server is touched when the disks cannot hold what a restore brings (a snapshot's bytes, a replay's segments). */
export async function roomFor(need: { what: string; bytes: number }, places: readonly string[]): Promise<void> {
  for (const place of places) {
    const fs = await statfs(place);
    const free = fs.bavail * fs.bsize;
    if (free < need.bytes * 1.1 + 64 * 1024 * 1024) {
      throw new BackupFailed("RESTORE_NO_SPACE", `${need.what} needs about ${mib(need.bytes * 1.1)} free in ${place}, which has ${mib(free)}: nothing was touched`);
    }
  }
}
