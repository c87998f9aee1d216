import { z } from "zod";
import { namePattern } from "../envelope.ts";
import { defineContract } from "./command.ts";
import { defineRecord } from "./record.ts";

export const snapshotKinds = ["logical", "physical", "ebs"] as const;
export type SnapshotKind = (typeof snapshotKinds)[number];
export const snapshotIdPattern = /^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9_-]{1,64}-(logical|physical|ebs)-[0-9a-f]{6}$/;
const snapshotId = z.string().regex(snapshotIdPattern, "expected a snapshot id like 20261201T031500Z-db-2-logical-3f2a1c");

/** Where a point in the primary's history is: its binary log file and position, and its GTID position. */
export const coordinatesSchema = z.object({ file: z.string().min(1), position: z.number().int().nonnegative(), gtid: z.string() }).strict();
export type Coordinates = z.infer<typeof coordinatesSchema>;

/** Takes a snapshot of this node's database and streams it to S3, proven by a manifest and a completion record. */
export const backupNowContract = defineContract({
  type: "backup-now",
  role: "db",
  summary: "Take a snapshot of this node's database (logical, physical or EBS) into S3, with a manifest and checksums",
  payload: z.object({ kind: z.enum(snapshotKinds).optional(), reason: z.string().max(200).optional() }).strict(),
});

/**
 * A point in a primary's history to restore to. The transaction at the point is not applied
 * ("just before the DROP"): a time stops before the first transaction the binary log stamps at
 * or after it (whole seconds, as the log keeps them), a GTID before that transaction, a
 * file:position before the transaction holding that position; `latest` replays every whole
 * transaction shipped.
 */
export type RestoreTarget =
  | { kind: "latest"; text: "latest" }
  | { kind: "time"; text: string; seconds: number }
  | { kind: "gtid"; text: string; domain: number; server: number; seq: bigint }
  | { kind: "position"; text: string; file: string; position: number };

const binlogFilePattern = /^[A-Za-z0-9_.-]+\.[0-9]{6,}$/;

/** Reads `--to`: an RFC 3339 time with its offset, a GTID (domain-server-seq), FILE:POSITION, or `latest`. */
export function parseRestoreTarget(text: string): { ok: true; target: RestoreTarget } | { ok: false; problem: string } {
  if (text === "latest") return { ok: true, target: { kind: "latest", text } };
  if (gtidPattern.test(text)) {
    const [domain, server, seq] = text.split("-") as [string, string, string];
    return { ok: true, target: { kind: "gtid", text, domain: Number(domain), server: Number(server), seq: BigInt(seq) } };
  }
  const at = /^(.+):([0-9]{1,12})$/.exec(text);
  if (at && binlogFilePattern.test(at[1]!)) return { ok: true, target: { kind: "position", text, file: at[1]!, position: Number(at[2]) } };
  if (z.iso.datetime({ offset: true }).safeParse(text).success) return { ok: true, target: { kind: "time", text, seconds: Math.floor(Date.parse(text) / 1000) } };
  return { ok: false, problem: `expected an RFC 3339 time with its offset (2026-12-02T09:14:00Z), a GTID (0-1-4711), a binary-log FILE:POSITION (mariadb-bin.000042:1234) or "latest", got ${JSON.stringify(text.slice(0, 100))}` };
}

/** Restores a snapshot into this node's server: checked whole before the server is touched; optionally replayed to a point in time. */
export const restoreContract = defineContract({
  type: "restore",
  role: "db",
  summary: "Restore a snapshot into this node's server, checked whole before the server is touched; then replay the binary-log archive to a point, or start replicating",
  payload: z
    .object({
      snapshot: snapshotId,
      /** Replicate from this server once restored, so the node catches up. */
      replicaOf: z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict().optional(),
      /** Then make this node the cluster's primary: a new db-primary record and event; the old primary stops shipping. */
      promote: z.boolean().optional(),
      /** Replay the shipped binary log from the snapshot's coordinates up to this point (see parseRestoreTarget). */
      to: z
        .string()
        .max(100)
        .superRefine((text, ctx) => {
          const parsed = parseRestoreTarget(text);
          if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.problem });
        })
        .optional(),
    })
    .strict()
    .refine((p) => !(p.to && p.replicaOf), { message: "to and replicaOf cannot be combined: replicating would apply what the point in time leaves out" })
    .refine((p) => !(p.promote && p.replicaOf), { message: "promote and replicaOf cannot be combined: a primary does not replicate from another" }),
});

/** Restores a snapshot into a scratch server, compares its tables with the manifest's checksums, and records the time taken. */
export const drillContract = defineContract({
  type: "drill",
  role: "db",
  summary: "Restore a snapshot into a scratch server, compare every table's checksum with the manifest, record the RTO",
  payload: z.object({ snapshot: snapshotId.optional() }).strict(),
});

const object = z.object({ key: z.string().min(1), bytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).strict();

/** What a snapshot is, proven: every object's SHA-256 and size, where it stands in the primary's history, and its tables' checksums. */
export const backupManifestSchema = z
  .object({
    snapshot: snapshotId,
    node: z.string().regex(namePattern),
    kind: z.enum(snapshotKinds),
    compression: z.enum(["zstd", "gzip"]).nullable(),
    encryption: z.object({ algorithm: z.literal("aes-256-gcm-chunked"), keyFingerprint: z.string().regex(/^[0-9a-f]{16}$/) }).strict().nullable(),
    objects: z.array(object),
    ebs: z.object({ snapshotId: z.string(), volumeId: z.string() }).strict().optional(),
    coordinates: coordinatesSchema,
    server: z.object({ id: z.number().int(), uuid: z.string(), version: z.string(), role: z.enum(["primary", "replica"]) }).strict(),
    /** CHECKSUM TABLE of every table at the snapshot's moment; null where the server kept writing (a primary). */
    tables: z.record(z.string(), z.string().nullable()).nullable(),
    /** Bytes the database produced, before compression and encryption. */
    sourceBytes: z.number().int().nonnegative(),
    startedAt: z.iso.datetime(),
    finishedAt: z.iso.datetime(),
    /** lockMs: how long writes were blocked (an EBS snapshot's lock). */
    timings: z.object({ snapshotMs: z.number(), checksumsMs: z.number(), lockMs: z.number().optional() }).strict(),
  })
  .strict();
export type BackupManifest = z.infer<typeof backupManifestSchema>;

/** Written last: a snapshot without it is never used. It names the manifest by its SHA-256. */
export const backupCompleteSchema = z.object({ snapshot: snapshotId, manifestSha256: z.string().regex(/^[0-9a-f]{64}$/), completedAt: z.iso.datetime() }).strict();

/** The records a db node signs with its own key (verified against the keys it registered). */
export const backupManifestRecord = defineRecord({ type: "backup-manifest", summary: "A snapshot's manifest", actsAs: [], payload: backupManifestSchema });
export const backupCompleteRecord = defineRecord({ type: "backup-complete", summary: "A snapshot's completion record", actsAs: [], payload: backupCompleteSchema });

/** What a restore drill found: the time a restore took (the RTO) and whether every table came back as it was. */
export const drillReportSchema = z
  .object({
    snapshot: snapshotId,
    node: z.string().regex(namePattern),
    kind: z.enum(snapshotKinds),
    startedAt: z.iso.datetime(),
    finishedAt: z.iso.datetime(),
    /** From the first byte downloaded to the last checksum compared. */
    rtoMs: z.number().int().nonnegative(),
    restoredBytes: z.number().int().nonnegative(),
    /** False when the snapshot was taken on a primary, which kept writing: then only the tables' presence is compared. */
    checksumsRecorded: z.boolean(),
    tables: z.number().int().nonnegative(),
    mismatched: z.array(z.object({ table: z.string(), recorded: z.string().nullable(), restored: z.string().nullable() }).strict()),
    missing: z.array(z.string()),
    extra: z.array(z.string()),
    ok: z.boolean(),
  })
  .strict();
export type DrillReport = z.infer<typeof drillReportSchema>;
export const drillRecord = defineRecord({ type: "drill-report", summary: "A restore drill's result", actsAs: [], payload: drillReportSchema });

/** One MariaDB GTID: replication domain, server id, sequence number. */
export const gtidPattern = /^[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}$/;

/** One server's binary-log archive: Bosun's uuid for the server and the epoch of its history ("<uuid>-<epoch>"). */
export const binlogServerPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[1-9][0-9]{0,8}$/;

/**
 * One shipped piece of a server's binary log: the bytes [start, end) of `file`, as the server
 * wrote them, cut at event boundaries. `closes` says the file ends with this segment, so the next
 * segment may start the next file at offset 0. Written once, signed by the node, never overwritten.
 */
export const binlogSegmentSchema = z
  .object({
    server: z.string().regex(binlogServerPattern),
    node: z.string().regex(namePattern),
    seq: z.number().int().positive(),
    file: z.string().regex(/^[A-Za-z0-9_.-]+\.[0-9]{6,}$/),
    start: z.number().int().nonnegative(),
    end: z.number().int().positive(),
    bytes: z.number().int().positive(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    events: z.number().int().positive(),
    firstEventAt: z.iso.datetime(),
    lastEventAt: z.iso.datetime(),
    closes: z.boolean(),
    /** The first and last GTID the segment's transactions carry, by replication domain (absent: none began in it). */
    gtids: z.record(z.string().regex(/^[0-9]+$/), z.object({ first: z.string().regex(gtidPattern), last: z.string().regex(gtidPattern) }).strict()).optional(),
    key: z.string().min(1),
    shippedAt: z.iso.datetime(),
  })
  .strict()
  .refine((s) => s.end - s.start === s.bytes, { message: "bytes must equal end - start" });
export type BinlogSegment = z.infer<typeof binlogSegmentSchema>;
export const binlogSegmentRecord = defineRecord({ type: "binlog-segment", summary: "A shipped binary-log segment", actsAs: [], payload: binlogSegmentSchema });

/**
 * Which db node is the cluster's primary, written by the node a promotion made primary (signed by
 * it, with a conditional write: each generation replaces the one it read). A node this record
 * does not name stops shipping its binary log, so an old primary that comes back does not go on
 * as if it still were one.
 */
export const dbPrimarySchema = z
  .object({
    node: z.string().regex(namePattern),
    /** The history the new primary ships under ("<uuid>-<epoch>"). */
    server: z.string().regex(binlogServerPattern),
    generation: z.number().int().positive(),
    previous: z.string().regex(namePattern).optional(),
    promotedAt: z.iso.datetime(),
  })
  .strict();
export type DbPrimary = z.infer<typeof dbPrimarySchema>;
export const dbPrimaryRecord = defineRecord({ type: "db-primary", summary: "The cluster's primary db node, raised by a promotion", actsAs: [], payload: dbPrimarySchema });

/** Events the db role publishes besides command answers and alerts. */
export const dbEventSchemas = {
  /** A promotion: this node is the cluster's primary from now on. */
  "db-primary": z.object({ node: z.object({ id: z.string().regex(namePattern), roles: z.array(z.string().regex(namePattern)) }), primary: dbPrimarySchema }),
} as const;

/** What a db node adds to its heartbeats. */
export const dbReportSchema = z
  .object({
    server: z.object({ id: z.number().int(), uuid: z.string(), version: z.string() }).strict().optional(),
    role: z.enum(["primary", "replica", "unknown"]),
    backupReplica: z.boolean(),
    /** Where other servers reach this one to replicate from it. */
    address: z.object({ host: z.string(), port: z.number().int() }).strict().optional(),
    replication: z.object({ io: z.boolean(), sql: z.boolean(), lagSeconds: z.number().nullable(), pausedForBackup: z.boolean().optional() }).strict().optional(),
    /** Binary-log shipping on this node: its state, the history it ships, and how far behind the server it is. */
    shipping: z
      .object({
        state: z.enum(["idle", "shipping", "paused", "fenced", "stopping", "stopped"]),
        server: z.string().optional(),
        lastSeq: z.number().int().nonnegative().optional(),
        lastShippedAt: z.iso.datetime().optional(),
        /** Seconds since the oldest byte the server wrote that is not yet in S3 (0: nothing waiting). */
        behindSeconds: z.number().nonnegative(),
      })
      .strict()
      .optional(),
    /** Why the server could not be described, when it could not. */
    problem: z.string().optional(),
  })
  .strict();
export type DbReport = z.infer<typeof dbReportSchema>;
