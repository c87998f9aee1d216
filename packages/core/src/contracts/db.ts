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

/** Restores a snapshot into this node's server: checked whole before the server is touched. */
export const restoreContract = defineContract({
  type: "restore",
  role: "db",
  summary: "Restore a snapshot into this node's server, checked whole before the server is touched; optionally start replicating",
  payload: z
    .object({
      snapshot: snapshotId,
      /** Replicate from this server once restored, so the node catches up. */
      replicaOf: z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict().optional(),
    })
    .strict(),
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
    key: z.string().min(1),
    shippedAt: z.iso.datetime(),
  })
  .strict()
  .refine((s) => s.end - s.start === s.bytes, { message: "bytes must equal end - start" });
export type BinlogSegment = z.infer<typeof binlogSegmentSchema>;
export const binlogSegmentRecord = defineRecord({ type: "binlog-segment", summary: "A shipped binary-log segment", actsAs: [], payload: binlogSegmentSchema });

/** What a db node adds to its heartbeats. */
export const dbReportSchema = z
  .object({
    server: z.object({ id: z.number().int(), uuid: z.string(), version: z.string() }).strict().optional(),
    role: z.enum(["primary", "replica", "unknown"]),
    backupReplica: z.boolean(),
    /** Where other servers reach this one to replicate from it. */
    address: z.object({ host: z.string(), port: z.number().int() }).strict().optional(),
    replication: z.object({ io: z.boolean(), sql: z.boolean(), lagSeconds: z.number().nullable() }).strict().optional(),
    /** Why the server could not be described, when it could not. */
    problem: z.string().optional(),
  })
  .strict();
export type DbReport = z.infer<typeof dbReportSchema>;
