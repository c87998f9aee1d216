import {
  NodeKeyDirectory,
  StateStore,
  describeVolumeSnapshot,
  drillReportsOf,
  listBinlogServers,
  listSnapshots,
  planRecovery,
  readSnapshot,
  removeSnapshot,
  verifyChain,
  verifyObject,
  type ChainReport,
  type RecoveryPlan,
  type StoredSnapshot,
} from "@bosun/aws";
import { ConfigError, binlogServerPattern, errorMessage, parseRestoreTarget, type RestoreTarget, type BackupManifest, type DrillReport, type SnapshotKind } from "@bosun/core";
import { loadNodeRecords, type NodeRecord } from "../fleet.ts";
import { retentionPlan, type RetentionPlan } from "../retention.ts";
import type { Issuer } from "./issuer.ts";
import { sendCommand, type SendResult } from "./send.ts";
import type { NodeProgress } from "./follow.ts";

/** What reads and checks snapshots needs: the bucket, and the keys nodes registered (manifests are signed by the node that took them). */
async function snapshotDeps(issuer: Issuer) {
  const store = new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket });
  const keys = new NodeKeyDirectory({ store }, { topicArn: await issuer.topicArn() });
  return { clients: issuer.clients, bucket: issuer.settings.bucket, store, keys };
}

/**
 * The db node a backup or drill runs on when none is named: a replica marked for backups (so the
 * primary never pauses), else the primary (non-blocking methods only), else any db node up.
 */
export function chooseDbNode(nodes: readonly NodeRecord[]): NodeRecord | undefined {
  const db = nodes.filter((n) => n.status === "up" && n.roles.includes("db"));
  return (
    db.find((n) => n.report?.db?.backupReplica && n.report.db.role === "replica") ??
    db.find((n) => n.report?.db?.role === "primary") ??
    db[0]
  );
}

/** The node named, or the one chooseDbNode picks from the fleet snapshot; an error saying why there is none. */
async function dbNode(issuer: Issuer, named: string | undefined): Promise<string> {
  if (named) return named;
  const nodes = await loadNodeRecords(new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket }));
  const chosen = chooseDbNode(nodes);
  if (!chosen) throw new ConfigError("No db node is up (bosun nodes --role db): start one, or name it with --node");
  return chosen.id;
}

export interface FollowOptions {
  wait: boolean;
  timeoutSeconds: number;
  onProgress?: (nodes: NodeProgress[]) => void;
}

export async function backupNow(issuer: Issuer, options: FollowOptions & { node?: string; kind?: SnapshotKind; reason?: string }): Promise<SendResult> {
  const node = await dbNode(issuer, options.node);
  const payload = { ...(options.kind ? { kind: options.kind } : {}), ...(options.reason ? { reason: options.reason } : {}) };
  return sendCommand(issuer, { type: "backup-now", target: `node:${node}`, payload, wait: options.wait, timeoutSeconds: options.timeoutSeconds, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
}

/** A restore's target point, read once for the CLI: a clear error naming --to. */
function restoreTarget(to: string): RestoreTarget {
  const parsed = parseRestoreTarget(to);
  if (!parsed.ok) throw new ConfigError(`--to: ${parsed.problem}`);
  return parsed.target;
}

/**
 * What a point-in-time restore would do (the snapshot, the segments, the bytes, an estimate),
 * read from the signed index: the same plan the node makes before it touches its server.
 */
export async function planRestore(issuer: Issuer, options: { to: string; snapshot?: string }): Promise<RecoveryPlan> {
  return planRecovery(await snapshotDeps(issuer), { to: restoreTarget(options.to), ...(options.snapshot ? { snapshot: options.snapshot } : {}) });
}

export async function restoreNode(
  issuer: Issuer,
  options: FollowOptions & { node: string; snapshot?: string; replicaOf?: string; to?: string; promote?: boolean },
): Promise<SendResult & { snapshot: string; plan?: RecoveryPlan }> {
  if (options.to && options.replicaOf) throw new ConfigError("--to and --replica-of cannot be combined: replicating would apply what the point in time leaves out");
  if (options.promote && options.replicaOf) throw new ConfigError("--promote and --replica-of cannot be combined: a primary does not replicate from another");
  // With a target, the plan is made here first: a refusal (no snapshot old enough, a broken chain) reaches the operator before any command goes out.
  const plan = options.to ? await planRestore(issuer, { to: options.to, ...(options.snapshot ? { snapshot: options.snapshot } : {}) }) : undefined;
  const snapshot = plan?.snapshot.id ?? options.snapshot ?? (await latestSnapshot(issuer, ["logical", "physical"])).snapshot;
  const replicaOf = options.replicaOf ? await replicationSource(issuer, options.replicaOf, options.node) : undefined;
  const sent = await sendCommand(issuer, {
    type: "restore",
    target: `node:${options.node}`,
    payload: { snapshot, ...(replicaOf ? { replicaOf } : {}), ...(options.to ? { to: options.to } : {}), ...(options.promote ? { promote: true } : {}) },
    wait: options.wait,
    timeoutSeconds: options.timeoutSeconds,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  return { ...sent, snapshot, ...(plan ? { plan } : {}) };
}

export async function drillNow(issuer: Issuer, options: FollowOptions & { node?: string; snapshot?: string }): Promise<SendResult> {
  const node = await dbNode(issuer, options.node);
  return sendCommand(issuer, {
    type: "drill",
    target: `node:${node}`,
    payload: options.snapshot ? { snapshot: options.snapshot } : {},
    wait: options.wait,
    timeoutSeconds: options.timeoutSeconds,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}

/** `primary` (the db node reporting itself primary, at the address it advertises) or HOST:PORT. */
async function replicationSource(issuer: Issuer, spec: string, restoring: string): Promise<{ host: string; port: number }> {
  if (spec === "primary") {
    const nodes = await loadNodeRecords(new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket }));
    const primary = nodes.find((n) => n.status === "up" && n.id !== restoring && n.report?.db?.role === "primary");
    if (!primary) throw new ConfigError("--replica-of primary: no db node up reports itself primary (bosun nodes --role db)");
    if (!primary.report?.db?.address) throw new ConfigError(`--replica-of primary: primary ${primary.id} advertises no address (set db.advertise on it), or pass --replica-of HOST:PORT`);
    return primary.report.db.address;
  }
  const m = /^(.+):(\d{1,5})$/.exec(spec);
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) throw new ConfigError(`--replica-of must be "primary" or HOST:PORT, received ${JSON.stringify(spec)}`);
  return { host: m[1]!, port };
}

export interface SnapshotSummary {
  snapshot: string;
  status: "complete" | "incomplete" | "refused";
  node?: string;
  kind?: SnapshotKind;
  takenAt: string;
  storedBytes: number;
  sourceBytes?: number;
  encrypted?: boolean;
  coordinates?: BackupManifest["coordinates"];
  problem?: string;
}

function summarize(s: StoredSnapshot): SnapshotSummary {
  const manifest = s.status === "refused" ? undefined : s.manifest;
  return {
    snapshot: s.id,
    status: s.status,
    ...(manifest ? { node: manifest.node, kind: manifest.kind, sourceBytes: manifest.sourceBytes, encrypted: manifest.encryption !== null, coordinates: manifest.coordinates } : {}),
    takenAt: (manifest ? new Date(manifest.startedAt) : s.takenAt).toISOString(),
    storedBytes: s.stored.reduce((sum, o) => sum + o.bytes, 0),
    ...(s.status !== "complete" ? { problem: s.problem } : {}),
  };
}

/** Every snapshot in the bucket, newest first, complete or not (and why not). */
export async function listBackups(issuer: Issuer): Promise<SnapshotSummary[]> {
  return (await listSnapshots(await snapshotDeps(issuer))).map(summarize);
}

async function latestSnapshot(issuer: Issuer, kinds: readonly SnapshotKind[]): Promise<SnapshotSummary & { snapshot: string }> {
  const latest = (await listBackups(issuer)).find((s) => s.status === "complete" && s.kind && kinds.includes(s.kind));
  if (!latest) throw new ConfigError(`There is no complete ${kinds.join(" or ")} snapshot (bosun backup list); take one with bosun backup now`);
  return latest;
}

export interface BackupDetail {
  snapshot: string;
  status: "complete" | "incomplete" | "refused";
  problem?: string;
  manifest?: BackupManifest;
  completedAt?: string;
  drills: DrillReport[];
}

export async function showBackup(issuer: Issuer, id: string): Promise<BackupDetail> {
  const deps = await snapshotDeps(issuer);
  const status = await readSnapshot(deps, id);
  const drills = await drillReportsOf(deps, id);
  if (status.status === "complete") return { snapshot: id, status: "complete", manifest: status.manifest, completedAt: status.completedAt, drills };
  return { snapshot: id, status: status.status, problem: status.problem, ...(status.status === "incomplete" && status.manifest ? { manifest: status.manifest } : {}), drills };
}

export interface VerifyResult {
  snapshot: string;
  ok: boolean;
  problem?: string;
  objects: { key: string; bytes: number; ok: boolean; problem?: string }[];
  durationMs: number;
}

/**
 * Re-reads every object of a snapshot (the latest complete one when none is named) and checks its
 * size and SHA-256 against the manifest; for an EBS snapshot, asks EC2 whether it is still there.
 */
export async function verifyBackup(issuer: Issuer, id?: string, onObject?: (key: string) => void): Promise<VerifyResult> {
  const started = Date.now();
  const deps = await snapshotDeps(issuer);
  const snapshot = id ?? (await latestSnapshot(issuer, ["logical", "physical", "ebs"])).snapshot;
  const status = await readSnapshot(deps, snapshot);
  if (status.status !== "complete") return { snapshot, ok: false, problem: status.problem, objects: [], durationMs: Date.now() - started };
  const objects: VerifyResult["objects"] = [];
  for (const object of status.manifest.objects) {
    onObject?.(object.key);
    try {
      await verifyObject(deps.clients, deps.bucket, object);
      objects.push({ key: object.key, bytes: object.bytes, ok: true });
    } catch (error) {
      objects.push({ key: object.key, bytes: object.bytes, ok: false, problem: errorMessage(error) });
    }
  }
  let problem: string | undefined;
  const ebs = status.manifest.ebs;
  if (ebs) {
    const state = await describeVolumeSnapshot(deps.clients, ebs.snapshotId).catch((error: unknown) => ({ state: "unknown", message: errorMessage(error) }));
    if (state.state !== "completed") problem = `EBS snapshot ${ebs.snapshotId} is ${state.state}${"message" in state && state.message ? `: ${state.message}` : ""}`;
  }
  const failed = objects.filter((o) => !o.ok);
  if (!problem && failed.length) problem = `${failed.length} of ${objects.length} object(s) do not match the manifest: ${failed.map((o) => o.key).join(", ")}`;
  return { snapshot, ok: !problem, ...(problem ? { problem } : {}), objects, durationMs: Date.now() - started };
}

export interface BinlogVerifyResult {
  ok: boolean;
  chains: ChainReport[];
}

/**
 * Proves the binary-log archive of one server history ("<uuid>-<epoch>"), or of every history in
 * the bucket: index entries signed and in sequence, offsets continuous within and across files,
 * every segment present with its SHA-256. Not ok when any chain has a break, or there is none.
 */
export async function verifyBinlog(issuer: Issuer, server?: string): Promise<BinlogVerifyResult> {
  const deps = await snapshotDeps(issuer);
  if (server !== undefined && !binlogServerPattern.test(server)) throw new ConfigError(`--server: expected a server history like 0b6f…-1 (a uuid and an epoch), got "${server}"`);
  const servers = server ? [server] : await listBinlogServers(deps.clients, deps.bucket);
  const chains: ChainReport[] = [];
  for (const s of servers) chains.push(await verifyChain(deps, s));
  return { ok: chains.length > 0 && chains.every((c) => c.ok), chains };
}

export interface PruneResult extends RetentionPlan {
  dryRun: boolean;
  removedBytes: number;
}

/** Applies retention to what is in the bucket (never to local state); with dryRun, only says what it would remove. */
export async function pruneBackups(issuer: Issuer, options: { dryRun: boolean; now?: Date }): Promise<PruneResult> {
  const deps = await snapshotDeps(issuer);
  const snapshots = await listSnapshots(deps);
  const plan = retentionPlan(
    snapshots.map((s) => ({
      id: s.id,
      status: s.status,
      takenAt: s.status === "complete" ? new Date(s.manifest.startedAt) : s.takenAt,
      lastWrittenAt: new Date(Math.max(0, ...s.stored.map((o) => o.lastModified.getTime()))),
    })),
    issuer.settings.backups.retention,
    options.now ?? new Date(),
  );
  const byId = new Map(snapshots.map((s) => [s.id, s]));
  let removedBytes = 0;
  for (const { id } of plan.remove) {
    const snapshot = byId.get(id)!;
    removedBytes += snapshot.stored.reduce((sum, o) => sum + o.bytes, 0);
    if (!options.dryRun) await removeSnapshot(deps, snapshot);
  }
  return { ...plan, dryRun: options.dryRun, removedBytes };
}
