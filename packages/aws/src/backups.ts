import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { backupCompleteRecord, backupManifestRecord, BosunError, canonicalJson, drillRecord, type BackupManifest, type DrillReport } from "@bosun/core";
import type { AwsClients } from "./clients.ts";
import type { NodeKeyDirectory } from "./node-keys.ts";
import { deleteVolumeSnapshot } from "./ebs.ts";
import { deleteObjects, downloadStream, headObject, listObjects, type ObjectInfo } from "./objects.ts";
import type { StateStore } from "./state.ts";
import { verifyNodeRecord } from "./verify.ts";

/** Where a cluster's backups live in its bucket. */
export const backupKeys = {
  snapshots: "backups/snapshots/",
  snapshot: (id: string) => `backups/snapshots/${id}/`,
  manifest: (id: string) => `backups/snapshots/${id}/manifest.json`,
  complete: (id: string) => `backups/snapshots/${id}/complete.json`,
  data: (id: string, extension: string) => `backups/snapshots/${id}/data.${extension}`,
  drills: "backups/drills/",
  drill: (at: string, id: string) => `backups/drills/${at}-${id}.json`,
};

/** A backup piece is missing or not what its manifest says, or a snapshot is not complete. */
export class BackupError extends BosunError {}

/** The SHA-256 a completion record names: of the manifest record as it is stored. */
export function manifestDigest(manifest: unknown): string {
  return createHash("sha256").update(canonicalJson(manifest)).digest("hex");
}

export type SnapshotStatus =
  | { status: "complete"; id: string; manifest: BackupManifest; completedAt: string }
  | { status: "incomplete"; id: string; manifest?: BackupManifest; problem: string }
  | { status: "refused"; id: string; problem: string };

/**
 * A snapshot as its records prove it: complete only when its manifest and its completion record
 * (written last) are both signed by the node that took it, and the completion names this very
 * manifest. Anything less is never used.
 */
export async function readSnapshot(deps: { store: StateStore; keys: NodeKeyDirectory }, id: string): Promise<SnapshotStatus> {
  const rawManifest = await deps.store.get(backupKeys.manifest(id));
  if (rawManifest === undefined) return { status: "incomplete", id, problem: "it has no manifest" };
  const manifest = await verifyNodeRecord(rawManifest, backupManifestRecord, deps.keys);
  if (!manifest.ok) return { status: "refused", id, problem: `its manifest is refused: ${manifest.error.reason}: ${manifest.error.detail}` };
  if (manifest.value.payload.node !== manifest.value.node || manifest.value.payload.snapshot !== id) {
    return { status: "refused", id, problem: `its manifest names node ${manifest.value.payload.node} and snapshot ${manifest.value.payload.snapshot}, signed by node ${manifest.value.node}` };
  }
  const rawComplete = await deps.store.get(backupKeys.complete(id));
  if (rawComplete === undefined) return { status: "incomplete", id, manifest: manifest.value.payload, problem: "it has no completion record: it never finished" };
  const complete = await verifyNodeRecord(rawComplete, backupCompleteRecord, deps.keys, manifest.value.node);
  if (!complete.ok) return { status: "refused", id, problem: `its completion record is refused: ${complete.error.reason}: ${complete.error.detail}` };
  if (complete.value.payload.manifestSha256 !== manifestDigest(rawManifest)) {
    return { status: "refused", id, problem: "its completion record names another manifest: the manifest was replaced after the snapshot completed" };
  }
  return { status: "complete", id, manifest: manifest.value.payload, completedAt: complete.value.payload.completedAt };
}

/** A snapshot as its records prove it, with the objects stored under its prefix. */
export type StoredSnapshot = SnapshotStatus & { stored: ObjectInfo[]; takenAt: Date };

/** Every snapshot in the bucket, newest first, each as its records prove it. */
export async function listSnapshots(deps: { clients: AwsClients; bucket: string; store: StateStore; keys: NodeKeyDirectory }): Promise<StoredSnapshot[]> {
  const stored = new Map<string, ObjectInfo[]>();
  for (const object of await listObjects(deps.clients, deps.bucket, backupKeys.snapshots)) {
    const id = object.key.slice(backupKeys.snapshots.length).split("/")[0];
    if (id) stored.set(id, [...(stored.get(id) ?? []), object]);
  }
  const all = await Promise.all([...stored].map(async ([id, objects]) => ({ ...(await readSnapshot(deps, id)), stored: objects, takenAt: snapshotTime(id) ?? new Date(0) })));
  return all.sort((a, b) => b.id.localeCompare(a.id));
}

/** When a snapshot was started, from its id ("20261201T031500Z-…"). */
export function snapshotTime(id: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-/.exec(id);
  return m ? new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`) : undefined;
}

/**
 * Removes a snapshot: its completion record first, so a snapshot half removed is never taken
 * for a complete one; then its data, its manifest last; and the EBS snapshot it names.
 */
export async function removeSnapshot(deps: { clients: AwsClients; bucket: string }, snapshot: StoredSnapshot): Promise<void> {
  const complete = backupKeys.complete(snapshot.id);
  const manifest = backupKeys.manifest(snapshot.id);
  const keys = snapshot.stored.map((o) => o.key);
  if (keys.includes(complete)) await deleteObjects(deps.clients, deps.bucket, [complete]);
  await deleteObjects(deps.clients, deps.bucket, keys.filter((k) => k !== complete && k !== manifest));
  const ebs = snapshot.status !== "refused" ? snapshot.manifest?.ebs : undefined;
  if (ebs) await deleteVolumeSnapshot(deps.clients, ebs.snapshotId);
  if (keys.includes(manifest)) await deleteObjects(deps.clients, deps.bucket, [manifest]);
}

/** Drill reports (signed by the node that ran them), newest first; of one snapshot when named. Reports that fail their checks are left out. */
export async function drillReportsOf(deps: { clients: AwsClients; bucket: string; store: StateStore; keys: NodeKeyDirectory }, snapshot?: string): Promise<DrillReport[]> {
  const keys = (await listObjects(deps.clients, deps.bucket, backupKeys.drills)).map((o) => o.key).filter((k) => !snapshot || k.endsWith(`-${snapshot}.json`));
  const reports: DrillReport[] = [];
  for (const key of keys) {
    const read = await verifyNodeRecord(await deps.store.get(key), drillRecord, deps.keys);
    if (read.ok && read.value.payload.node === read.value.node) reports.push(read.value.payload);
  }
  return reports.sort((a, b) => b.finishedAt.localeCompare(a.finishedAt));
}

/** Passes bytes through, and fails the stream at its end unless they were exactly `bytes` bytes with this SHA-256. */
export class VerifyingDigest extends Transform {
  readonly #hash = createHash("sha256");
  readonly #expected: { key: string; bytes: number; sha256: string };
  #bytes = 0;

  constructor(expected: { key: string; bytes: number; sha256: string }) {
    super();
    this.#expected = expected;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#hash.update(chunk);
    this.#bytes += chunk.length;
    if (this.#bytes > this.#expected.bytes) return done(new BackupError("SNAPSHOT_CORRUPT", `${this.#expected.key} holds more than the ${this.#expected.bytes} bytes its manifest records`));
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    const sha256 = this.#hash.digest("hex");
    if (this.#bytes !== this.#expected.bytes) return done(new BackupError("SNAPSHOT_CORRUPT", `${this.#expected.key} holds ${this.#bytes} bytes; its manifest records ${this.#expected.bytes}`));
    if (sha256 !== this.#expected.sha256) return done(new BackupError("SNAPSHOT_CORRUPT", `${this.#expected.key} does not match its manifest: SHA-256 ${sha256.slice(0, 16)}…, recorded ${this.#expected.sha256.slice(0, 16)}…`));
    done();
  }
}

/**
 * Reads an object whole and checks its size and SHA-256 against its manifest entry. Resolves
 * when it matches; rejects naming the object when it is missing or differs.
 */
export async function verifyObject(clients: AwsClients, bucket: string, object: { key: string; bytes: number; sha256: string }, signal?: AbortSignal): Promise<void> {
  const head = await headObject(clients, bucket, object.key);
  if (!head) throw new BackupError("SNAPSHOT_OBJECT_MISSING", `${object.key} is missing`);
  if (head.bytes !== object.bytes) throw new BackupError("SNAPSHOT_CORRUPT", `${object.key} holds ${head.bytes} bytes; its manifest records ${object.bytes}`);
  const download = await downloadStream(clients, { bucket, key: object.key, ...(signal ? { signal } : {}) });
  if (!download) throw new BackupError("SNAPSHOT_OBJECT_MISSING", `${object.key} is missing`);
  const check = new VerifyingDigest(object);
  await new Promise<void>((resolve, reject) => {
    download.body.on("error", reject);
    check.on("error", reject);
    check.on("finish", () => resolve());
    check.resume();
    download.body.pipe(check);
  });
}
