import { randomBytes } from "node:crypto";
import { pipeline } from "node:stream";
import { Lease, PreconditionFailed, abortableDelay, backupKeys, stateKeys, manifestDigest, readSnapshot, uploadStream, type SnapshotStatus } from "@bosun/aws";
import { BosunError, errorMessage, type BackupManifest, type Coordinates, type DbSettings, type SnapshotKind } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { Digest, Encryptor, compressor, endsWhen, identity, loadBackupKey } from "./codec.ts";
import type { DatabaseEngine } from "./engine.ts";
import { ebsSnapshot } from "./ebs.ts";

/** A backup could not be taken (or joined); its code says why. */
export class BackupFailed extends BosunError {}

/** One backup at a time per cluster: whoever holds this lease is taking it. */
export const backupLeaseKey = stateKeys.lease("backup");
const LEASE_MS = 60_000;
const RENEW_MS = 15_000;
const PROGRESS_MS = 5_000;

export interface BackupRequest {
  kind: SnapshotKind;
  signal: AbortSignal;
  progress(message: string, fraction?: number): Promise<void>;
}

export interface BackupResult {
  snapshot: string;
  kind: SnapshotKind;
  /** True when another backup was already running and this request waited for it instead of taking a second. */
  joined: boolean;
  storedBytes: number;
  sourceBytes: number;
  durationMs: number;
  coordinates: Coordinates;
}

/**
 * Takes one snapshot of this node's database into S3. On a replica the SQL thread stops first,
 * so the data and the coordinates hold still (the primary never pauses); on a primary only
 * methods that do not block writes run (a single-transaction dump, mariabackup), and an EBS
 * snapshot, which needs a lock, is refused. The bytes stream from the tool through compression,
 * encryption and hashing into a multipart upload: no staging file, memory bounded by the parts
 * in flight. The manifest is written after the data, and the completion record after the
 * manifest: a snapshot without both is never used. One backup runs at a time in the cluster; a
 * request while one runs waits for it and answers with its snapshot.
 */
export async function takeBackup(services: RoleServices, engine: DatabaseEngine, request: BackupRequest): Promise<BackupResult> {
  const db = services.settings.db!;
  const log = services.logger;
  const started = Date.now();
  const at = services.clock.now();
  const snapshot = `${at.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}-${services.node.id}-${request.kind}-${randomBytes(3).toString("hex")}`;

  const lease = new Lease({ store: services.store, clock: services.clock }, { key: backupLeaseKey, holder: `${services.node.id}/${snapshot}`, ttlMs: LEASE_MS });
  // Another backup running: wait for it and answer with its snapshot; if it never completes (its node died), take our own.
  while (!(await lease.acquire())) {
    const joined = await joinRunning(services, request, started);
    if (joined) return joined;
  }

  // Losing the lease (this node went silent for a minute) means another backup may start: stop ours.
  const work = new AbortController();
  const stop = () => work.abort();
  request.signal.addEventListener("abort", stop, { once: true });
  const renewal = setInterval(() => {
    lease.renew().then(
      (held) => held || (log.error({ snapshot }, "lost the backup lease: stopping this backup"), work.abort(new BackupFailed("BACKUP_LEASE_LOST", "another backup took over the cluster's backup lease"))),
      (error: unknown) => log.warn({ err: error }, "could not renew the backup lease"),
    );
  }, RENEW_MS);
  try {
    const server = await engine.describe();
    if (request.kind === "ebs" && server.role === "primary") {
      throw new BackupFailed("BACKUP_WOULD_BLOCK", "an EBS snapshot needs a brief lock that blocks writes: take it on a replica marked for backups, or take a logical or physical snapshot here");
    }
    await request.progress(`taking a ${request.kind} snapshot ${snapshot} on this ${server.role}`);
    const taken = await (server.role === "replica" ? whilePaused(engine, (held) => capture(services, engine, db, snapshot, request, held, work.signal)) : capture(services, engine, db, snapshot, request, undefined, work.signal));
    const manifest: BackupManifest = {
      snapshot,
      node: services.node.id,
      kind: request.kind,
      server: { id: server.id, uuid: server.uuid, version: server.version, role: server.role },
      startedAt: at.toISOString(),
      finishedAt: services.clock.now().toISOString(),
      ...taken,
    };
    await publishSnapshot(services, manifest);
    const result = resultOf(manifest, { joined: false, started });
    log.info({ ...result }, "backup complete");
    return result;
  } catch (error) {
    throw work.signal.reason instanceof BackupFailed ? work.signal.reason : error;
  } finally {
    clearInterval(renewal);
    request.signal.removeEventListener("abort", stop);
    await lease.release();
  }
}

type Captured = Pick<BackupManifest, "compression" | "encryption" | "objects" | "coordinates" | "tables" | "sourceBytes" | "timings" | "ebs">;

/** Stops the replica's SQL thread for the length of `fn`, and starts it again whatever happens. */
async function whilePaused<T>(engine: DatabaseEngine, fn: (held: Coordinates) => Promise<T>): Promise<T> {
  const held = await engine.pauseReplica();
  try {
    return await fn(held);
  } finally {
    await engine.resumeReplica();
  }
}

async function capture(services: RoleServices, engine: DatabaseEngine, db: DbSettings, snapshot: string, request: BackupRequest, held: Coordinates | undefined, signal: AbortSignal): Promise<Captured> {
  // Checksums only mean something while the data holds still: on a paused replica, not on a primary.
  const checksumsStarted = Date.now();
  const tables = held ? await engine.checksums() : null;
  const checksumsMs = Date.now() - checksumsStarted;
  const snapshotStarted = Date.now();
  if (request.kind === "ebs") {
    const ebs = await ebsSnapshot(services, engine, db, snapshot, request, signal);
    return { compression: null, encryption: null, objects: [], coordinates: held ?? ebs.coordinates, tables, sourceBytes: 0, timings: { snapshotMs: Date.now() - snapshotStarted, checksumsMs, lockMs: ebs.lockMs }, ebs: ebs.ebs };
  }
  const streamed = await streamSnapshot(services, engine, db, snapshot, request, signal);
  // A replica's own binary log is not the primary's history: its coordinates are where its SQL thread stopped.
  const coordinates = held ?? streamed.coordinates;
  if (!coordinates) throw new BackupFailed("BACKUP_NO_COORDINATES", `the ${request.kind} snapshot did not report where it stands in the binary log`);
  return { ...streamed.encoding, objects: [streamed.object], coordinates, tables, sourceBytes: streamed.sourceBytes, timings: { snapshotMs: Date.now() - snapshotStarted, checksumsMs } };
}

/** The snapshot tool's bytes, through compression, encryption and hashing, into one multipart upload. */
async function streamSnapshot(services: RoleServices, engine: DatabaseEngine, db: DbSettings, snapshot: string, request: BackupRequest, signal: AbortSignal) {
  const kind = request.kind as "logical" | "physical";
  const key = db.backup.encryptionKeyFile ? await loadBackupKey(db.backup.encryptionKeyFile) : undefined;
  const extension = [kind === "logical" ? "sql" : "xbstream", db.backup.compression === "zstd" ? "zst" : "gz", ...(key ? ["enc"] : [])].join(".");
  const objectKey = backupKeys.data(snapshot, extension);
  const estimate = await engine.dataSize().catch(() => 0);
  // An upload that fails must stop the tool, and a tool that fails must fail the upload.
  const local = new AbortController();
  const both = AbortSignal.any([signal, local.signal]);
  const run = await engine.snapshot(kind, { signal: both, scratchDir: await engine.scratchDir() });
  // Awaited below; until then a tool that fails early (the database went away) must not be an unhandled rejection.
  run.done.catch(() => undefined);
  const source = new Digest();
  const stored = new Digest();
  const compressing = compressor(db.backup.compression);
  pipeline(run.stream, endsWhen(run.done), source, compressing.stream, endsWhen(compressing.done), key ? new Encryptor(key) : identity(), stored, () => undefined);
  const body = stored;
  let last = Date.now();
  const startedAt = Date.now();
  try {
    const upload = await uploadStream(services.clients, {
      bucket: services.settings.bucket,
      key: objectKey,
      body,
      partMB: db.backup.partMB,
      signal: both,
      onProgress: (bytes) => {
        if (Date.now() - last < PROGRESS_MS) return;
        last = Date.now();
        const rate = source.bytes / Math.max(0.001, (Date.now() - startedAt) / 1000);
        const fraction = estimate > 0 ? Math.min(0.99, source.bytes / estimate) : undefined;
        void request.progress(`${mib(source.bytes)} read, ${mib(bytes)} uploaded (${mib(rate)}/s)`, fraction);
      },
    });
    await run.done;
    if (upload.bytes !== stored.bytes) throw new BackupFailed("BACKUP_SIZE_MISMATCH", `S3 took ${upload.bytes} bytes of ${objectKey}, and ${stored.bytes} were sent`);
  } catch (error) {
    // Whether the snapshot tool had failed on its own (the database went away) before the upload stopped: that says more.
    const toolFailure = await Promise.race([run.done.then(() => undefined, (e: unknown) => e), new Promise<undefined>((resolve) => setImmediate(resolve, undefined))]);
    // A broken pipe into the compressor: it died, and its exit (which can come a moment later) says why.
    const compressorFailure =
      [error, toolFailure].some((e) => (e as { code?: string } | undefined)?.code === "EPIPE") ? await Promise.race([compressing.done.then(() => undefined, (e: unknown) => e), new Promise<undefined>((resolve) => setTimeout(resolve, 500, undefined))]) : undefined;
    local.abort();
    await run.done.catch(() => undefined);
    throw compressorFailure ?? toolFailure ?? error;
  }
  return {
    object: { key: objectKey, bytes: stored.bytes, sha256: stored.sha256() },
    encoding: { compression: db.backup.compression, encryption: key ? { algorithm: "aes-256-gcm-chunked" as const, keyFingerprint: key.fingerprint } : null },
    sourceBytes: source.bytes,
    coordinates: run.coordinates(),
  };
}


/** Writes the manifest, then the completion record naming it: both signed by this node, neither ever overwritten. */
async function publishSnapshot(services: RoleServices, manifest: BackupManifest): Promise<void> {
  const record = services.signRecord("backup-manifest", manifest);
  try {
    await services.store.put(backupKeys.manifest(manifest.snapshot), record, { ifNoneMatch: "*" });
    await services.store.put(
      backupKeys.complete(manifest.snapshot),
      services.signRecord("backup-complete", { snapshot: manifest.snapshot, manifestSha256: manifestDigest(record), completedAt: services.clock.now().toISOString() }),
      { ifNoneMatch: "*" },
    );
  } catch (error) {
    if (error instanceof PreconditionFailed) throw new BackupFailed("BACKUP_EXISTS", `snapshot ${manifest.snapshot} already has records: they are never overwritten`);
    throw error;
  }
}

/**
 * Waits for the backup that holds the lease and answers with its snapshot: a duplicate request
 * makes one backup. Undefined when that backup did not complete (it failed, or its node died and
 * its lease ran out): the caller takes the lease and a backup of its own.
 */
async function joinRunning(services: RoleServices, request: BackupRequest, started: number): Promise<BackupResult | undefined> {
  let running: string | undefined;
  for (;;) {
    const current = await services.store.getVersioned<{ holder?: string; expiresAt?: string }>(backupLeaseKey);
    const holder = current?.value.holder;
    const live = current && Date.parse(current.value.expiresAt ?? "") > services.clock.now().getTime();
    if (!live || !holder) break;
    if (holder !== running) {
      running = holder;
      await request.progress(`a backup is already running (${holder}): waiting for it instead of taking a second`);
    }
    await abortableDelay(1000, request.signal);
    if (request.signal.aborted) throw new BackupFailed("BACKUP_INTERRUPTED", `stopped while waiting for the backup already running (${holder})`);
  }
  const snapshot = running?.split("/")[1];
  if (!snapshot) return undefined;
  const status: SnapshotStatus = await readSnapshot({ store: services.store, keys: services.nodeKeyDirectory() }, snapshot);
  if (status.status !== "complete") {
    services.logger.warn({ snapshot, problem: status.problem }, "the backup this one waited for did not complete; taking one instead");
    await request.progress(`the backup already running (${snapshot}) did not complete (${status.problem}): taking one instead`);
    return undefined;
  }
  return resultOf(status.manifest, { joined: true, started });
}

function resultOf(manifest: BackupManifest, how: { joined: boolean; started: number }): BackupResult {
  return {
    snapshot: manifest.snapshot,
    kind: manifest.kind,
    joined: how.joined,
    storedBytes: manifest.objects.reduce((sum, o) => sum + o.bytes, 0),
    sourceBytes: manifest.sourceBytes,
    durationMs: Date.now() - how.started,
    coordinates: manifest.coordinates,
  };
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function describeError(error: unknown): { code: string; error: string } {
  return { code: (error as { code?: string }).code ?? "BACKUP_FAILED", error: errorMessage(error) };
}
