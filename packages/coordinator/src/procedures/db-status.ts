import { NodeKeyDirectory, StateStore, lastIndexEntry, listBinlogServers, listSnapshots, readPrimary } from "@bosun/aws";
import type { DbPrimary, DbReport } from "@bosun/core";
import { loadNodeRecords } from "../fleet.ts";
import type { Issuer } from "./issuer.ts";

/** One db node as its last heartbeat described it. */
export interface DbNodeStatus {
  node: string;
  status: string;
  lastSeen: string;
  role: DbReport["role"] | "no report";
  backupReplica: boolean;
  replication?: DbReport["replication"];
  shipping?: DbReport["shipping"];
  problem?: string;
}

/** One server history in the binary-log archive: how far it goes, and how long since its last segment. */
export interface ArchiveStatus {
  server: string;
  node?: string;
  lastSeq?: number;
  lastShippedAt?: string;
  lastEventAt?: string;
  secondsSinceLastSegment?: number;
  problem?: string;
}

export interface DbClusterStatus {
  /** The primary: named by the last promotion's record, else the db node up that reports itself primary. */
  primary?: string;
  /** The last promotion, as its signed record says (or why it cannot be read). */
  promotion?: DbPrimary | { problem: string };
  nodes: DbNodeStatus[];
  archives: ArchiveStatus[];
  latestSnapshot?: { id: string; kind: string; node: string; at: string };
  /** The oldest moment a point-in-time restore can start from: the oldest complete snapshot's (logical or physical). */
  oldestRestorePoint?: { snapshot: string; at: string };
  /** Seconds the primary's archive is behind its server (its agent's last report), and since its last durable segment. */
  shippingLag?: { behindSeconds: number; secondsSinceLastSegment?: number };
}

/**
 * The database cluster at a glance: which node is primary, each replica's threads and lag, the
 * shipping lag of the primary's binary log, the latest snapshot, and the oldest point a restore
 * can reach. Node state comes from heartbeats (db.health and the heartbeat interval bound how
 * fresh it is); the archive and snapshots are read from S3 as they are now.
 */
export async function dbStatus(issuer: Issuer, options: { now?: Date } = {}): Promise<DbClusterStatus> {
  const now = options.now ?? new Date();
  const store = new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket });
  const deps = { clients: issuer.clients, bucket: issuer.settings.bucket, store, keys: new NodeKeyDirectory({ store }, { topicArn: await issuer.topicArn() }) };
  const records = (await loadNodeRecords(store)).filter((n) => n.roles.includes("db"));
  const nodes: DbNodeStatus[] = records.map((n) => {
    const db = n.report?.db;
    return {
      node: n.id,
      status: n.status,
      lastSeen: n.lastSeen,
      role: db?.role ?? "no report",
      backupReplica: db?.backupReplica ?? false,
      ...(db?.replication ? { replication: db.replication } : {}),
      ...(db?.shipping ? { shipping: db.shipping } : {}),
      ...(db?.problem ? { problem: db.problem } : {}),
    };
  });
  const record = await readPrimary(deps);
  const named = record.ok ? record.primary?.node : undefined;
  const primary = nodes.find((n) => (named ? n.node === named : n.status === "up" && n.role === "primary"));
  const archives: ArchiveStatus[] = [];
  for (const server of await listBinlogServers(deps.clients, deps.bucket)) {
    const last = await lastIndexEntry(deps, server).catch((error: unknown) => ({ ok: false as const, key: server, problem: String(error) }));
    if (!last) archives.push({ server });
    else if (!last.ok) archives.push({ server, problem: `${last.key}: ${last.problem}` });
    else {
      const s = last.segment;
      archives.push({ server, node: s.node, lastSeq: s.seq, lastShippedAt: s.shippedAt, lastEventAt: s.lastEventAt, secondsSinceLastSegment: Math.round((now.getTime() - Date.parse(s.shippedAt)) / 1000) });
    }
  }
  const complete = (await listSnapshots(deps)).flatMap((s) => (s.status === "complete" ? [s.manifest] : []));
  const latest = complete[0];
  const restorable = complete.filter((m) => m.kind !== "ebs");
  const oldest = restorable.at(-1);
  const primaryArchive = primary?.shipping?.server ? archives.find((a) => a.server === primary.shipping!.server) : undefined;
  return {
    ...(primary ? { primary: primary.node } : named ? { primary: named } : {}),
    ...(record.ok ? (record.primary ? { promotion: record.primary } : {}) : { promotion: { problem: record.problem } }),
    nodes,
    archives,
    ...(latest ? { latestSnapshot: { id: latest.snapshot, kind: latest.kind, node: latest.node, at: latest.finishedAt } } : {}),
    ...(oldest ? { oldestRestorePoint: { snapshot: oldest.snapshot, at: oldest.kind === "logical" ? oldest.startedAt : oldest.finishedAt } } : {}),
    ...(primary?.shipping
      ? { shippingLag: { behindSeconds: primary.shipping.behindSeconds, ...(primaryArchive?.secondsSinceLastSegment === undefined ? {} : { secondsSinceLastSegment: primaryArchive.secondsSinceLastSegment }) } }
      : {}),
  };
}
