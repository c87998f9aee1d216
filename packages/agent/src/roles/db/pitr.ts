import { createHash, randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { BackupError, binlogFileNumber, downloadStream, gtidPositions, planRecovery, type RecoveryPlan } from "@bosun/aws";
import { parseRestoreTarget, type BinlogSegment, type Coordinates, type RestoreTarget } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { BackupFailed, mib } from "./backup.ts";
import { scanEvents } from "./binlog-format.ts";
import type { DatabaseEngine } from "./engine.ts";
import { restoreSnapshot, roomFor, type RestoreResult, type Stage } from "./restore.ts";

/** Where the replay stopped and what the data holds: the last whole transaction applied. */
export interface ReachedPoint {
  file: string;
  position: number;
  gtid: string;
  /** The binary log's time of the last transaction applied (none: the snapshot's own point). */
  lastTransactionAt?: string;
  transactions: number;
}

export interface PointInTimeResult extends RestoreResult {
  target: string;
  server: string;
  segments: number;
  binlogBytes: number;
  reached: ReachedPoint;
  replayMs: number;
}

/** Where a replay ends in the planned files, and what it will have applied by then. */
interface Stop {
  file: string;
  /** The offset replay stops before; undefined: the end of the file. */
  position: number | undefined;
  reached: ReachedPoint;
}

/**
 * Restores the newest snapshot before a point and replays the shipped binary log up to it. The
 * plan comes from the signed index; every planned segment is downloaded into the scratch
 * directory and checked against its size and SHA-256, and the exact stop found in its events,
 * all before the server is touched. Then the snapshot is restored and mariadb-binlog replays
 * from the snapshot's coordinates to just before the target's transaction; the server records
 * the point reached, and its archive starts a new epoch.
 */
export async function restoreToPoint(services: RoleServices, engine: DatabaseEngine, request: Stage & { to: string; snapshot?: string }): Promise<PointInTimeResult> {
  const parsed = parseRestoreTarget(request.to);
  if (!parsed.ok) throw new BackupFailed("RESTORE_TARGET", `to: ${parsed.problem}`);
  const deps = { clients: services.clients, bucket: services.settings.bucket, store: services.store, keys: services.nodeKeyDirectory() };
  const plan = await planRecovery(deps, { to: parsed.target, ...(request.snapshot ? { snapshot: request.snapshot } : {}) });
  await request.progress(`plan: snapshot ${plan.snapshot.id}, then ${plan.segments.length} segment(s) of ${plan.server} (${mib(plan.binlogBytes)}) to ${plan.target}`, 0.01);
  const work = join(await engine.scratchDir(), `pitr-${randomUUID()}`);
  await mkdir(work, { recursive: true, mode: 0o700 });
  try {
    await roomFor({ what: `the binary log up to ${plan.target}`, bytes: plan.binlogBytes }, [work]);
    const files = await download(services, plan, work, request);
    const stop = await findStop(plan, files, parsed.target);
    await request.progress(`every segment checked; the replay stops at ${stop.file}:${stop.position ?? "its end"} (${stop.reached.transactions} transaction(s)); restoring the snapshot`, 0.1);
    let replayMs = 0;
    const restored = await restoreSnapshot(services, engine, {
      snapshot: plan.snapshot.id,
      signal: request.signal,
      progress: request.progress,
      replay: async () => {
        const started = Date.now();
        const names = [...files.keys()];
        const replayed = names.slice(0, names.indexOf(stop.file) + 1);
        // A stop at a file's very start applies nothing of that file.
        if (stop.position !== undefined && stop.position <= 4) replayed.pop();
        if (replayed.length > 0) {
          await request.progress(`replaying ${replayed.length} binary-log file(s) from ${plan.snapshot.coordinates.file}:${plan.snapshot.coordinates.position} to ${stop.file}:${stop.position ?? "its end"}`, 0.9);
          await engine.replay(
            replayed.map((f) => files.get(f)!),
            { start: plan.snapshot.coordinates.position, ...(stop.position !== undefined && replayed.at(-1) === stop.file ? { stop: stop.position } : {}), signal: request.signal },
          );
        }
        replayMs = Date.now() - started;
        return { file: stop.reached.file, position: stop.reached.position, gtid: stop.reached.gtid } satisfies Coordinates;
      },
    });
    return { ...restored, target: plan.target, server: plan.server, segments: plan.segments.length, binlogBytes: plan.binlogBytes, reached: stop.reached, replayMs };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Downloads the planned segments into one file per binary-log file, each at its own offset (a
 * file whose replay starts part-way holds its first segment, for the format description, and a
 * hole up to where replay starts), checking each segment's size and SHA-256. Nothing is used
 * unless every byte matches its index entry. Returns the local path of each file, in order.
 */
async function download(services: RoleServices, plan: RecoveryPlan, dir: string, stage: Stage): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const pieces = [...plan.headers, ...plan.segments];
  let done = 0;
  for (const segment of pieces) {
    const path = join(dir, segment.file);
    if (!files.has(segment.file)) files.set(segment.file, path);
    const bytes = await fetchSegment(services, segment, stage.signal);
    // Written at the segment's own offset (not appended): a file replayed from part-way holds its first segment, then a hole.
    const handle = await open(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      await handle.write(bytes, 0, bytes.length, segment.start);
    } finally {
      await handle.close();
    }
    done += segment.bytes;
    await stage.progress(`downloaded and checked ${pieces.indexOf(segment) + 1} of ${pieces.length} segments (${mib(done)} of ${mib(plan.binlogBytes)})`, 0.01 + 0.08 * (done / Math.max(1, plan.binlogBytes)));
  }
  // Headers first in the map would reorder files: keep the binary log's own order.
  return new Map([...files].sort(([a], [b]) => a.localeCompare(b)));
}

async function fetchSegment(services: RoleServices, segment: BinlogSegment, signal: AbortSignal): Promise<Buffer> {
  const download = await downloadStream(services.clients, { bucket: services.settings.bucket, key: segment.key, signal });
  if (!download) throw new BackupError("BINLOG_SEGMENT_MISSING", `segment ${segment.seq} (${segment.key}) is missing: nothing was touched`);
  // An object of another size is refused before it is read into memory.
  if (download.bytes !== segment.bytes) {
    download.body.destroy();
    throw new BackupError("BINLOG_SEGMENT_CORRUPT", `segment ${segment.seq} (${segment.key}) holds ${download.bytes} bytes; its index entry records ${segment.bytes}: nothing was touched`);
  }
  const chunks: Buffer[] = [];
  for await (const chunk of download.body) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  if (bytes.length !== segment.bytes || sha256 !== segment.sha256) {
    throw new BackupError("BINLOG_SEGMENT_CORRUPT", `segment ${segment.seq} (${segment.key}) does not match its index entry: ${bytes.length} bytes with SHA-256 ${sha256.slice(0, 16)}…, recorded ${segment.bytes} bytes with ${segment.sha256.slice(0, 16)}…: nothing was touched`);
  }
  return bytes;
}

/**
 * Walks the events from the snapshot's coordinates to the target and finds the exact stop: the
 * start of the target's transaction (a time's first transaction at or after it, a GTID's own
 * transaction, the transaction holding a position), or for `latest` the end of the last whole
 * transaction. A transaction cut off by the end of the archive (a primary killed part-way) is
 * never replayed. Also says what the data will hold: the GTID position and the last
 * transaction's time.
 */
async function findStop(plan: RecoveryPlan, files: Map<string, string>, target: RestoreTarget): Promise<Stop> {
  const start = plan.snapshot.coordinates;
  const positions = gtidPositions(start.gtid);
  let transactions = 0;
  let lastAt: number | undefined;
  let open: { file: string; offset: number; gtid: string; domain: number } | undefined;
  let last: { file: string; end: number } = { file: start.file, end: start.position };
  const reached = (file: string, position: number): ReachedPoint => ({
    file,
    position,
    gtid: [...positions].map(([domain, p]) => `${domain}-${p.server}-${p.seq}`).join(","),
    ...(lastAt === undefined ? {} : { lastTransactionAt: new Date(lastAt * 1000).toISOString() }),
    transactions,
  });
  for (const segment of plan.segments) {
    if (target.kind === "position" && binlogFileNumber(segment.file) > binlogFileNumber(target.file)) {
      throw new BackupFailed("RESTORE_TARGET", `${target.text} is not in the archive: ${plan.server} goes from ${last.file}:${last.end} on to ${segment.file}`);
    }
    const bytes = await readRange(files.get(segment.file)!, segment.start, segment.bytes);
    for (const event of scanEvents(bytes, segment.start)) {
      if (segment.file === start.file && event.offset < start.position) continue;
      if (target.kind === "position" && segment.file === target.file && event.end > target.position) {
        // The target's transaction (or the one it falls in) is not applied.
        const at = open ?? { file: segment.file, offset: event.offset };
        if (!open && event.offset !== target.position) throw new BackupFailed("RESTORE_TARGET", `${target.text} is not where an event starts in ${target.file}: the nearest events start at ${last.end} and ${event.end}`);
        return { file: at.file, position: at.offset, reached: reached(at.file, at.offset) };
      }
      if (event.opens) {
        if (target.kind === "gtid" && event.opens.domain === target.domain && event.opens.seq >= target.seq) {
          if (event.opens.seq > target.seq || event.opens.server !== target.server) {
            throw new BackupFailed("RESTORE_TARGET", `GTID ${target.text} is not in the binary log: domain ${target.domain} goes on with ${event.opens.text} at ${segment.file}:${event.offset}`);
          }
          return { file: segment.file, position: event.offset, reached: reached(segment.file, event.offset) };
        }
        if (target.kind === "time" && event.timestamp >= target.seconds) return { file: segment.file, position: event.offset, reached: reached(segment.file, event.offset) };
        open = { file: segment.file, offset: event.offset, gtid: event.opens.text, domain: event.opens.domain };
      }
      if (event.commits && open) {
        const [, server, seq] = open.gtid.split("-");
        positions.set(open.domain, { server: Number(server), seq: BigInt(seq!) });
        transactions += 1;
        lastAt = event.timestamp;
        open = undefined;
      }
      last = { file: segment.file, end: event.end };
    }
  }
  if (target.kind !== "latest" && target.kind !== "time") throw new BackupFailed("BINLOG_ENDS_BEFORE_TARGET", `the planned segments end at ${last.file}:${last.end} without reaching ${target.text}`);
  if (target.kind === "time") throw new BackupFailed("BINLOG_ENDS_BEFORE_TARGET", `the planned segments end at ${last.file}:${last.end}, before any transaction at or after ${target.text}`);
  // Everything shipped, but not a transaction the archive holds only part of.
  return open ? { file: open.file, position: open.offset, reached: reached(open.file, open.offset) } : { file: last.file, position: undefined, reached: reached(last.file, last.end) };
}

async function readRange(path: string, start: number, length: number): Promise<Buffer> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, start);
    return buffer;
  } finally {
    await handle.close();
  }
}
