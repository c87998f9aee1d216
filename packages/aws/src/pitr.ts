import type { BackupManifest, BinlogSegment, Coordinates, RestoreTarget } from "@bosun/core";
import { BackupError, listSnapshots } from "./backups.ts";
import { binlogFileNumber, binlogKeys, continues, listBinlogServers, readIndexEntry } from "./binlog.ts";
import type { AwsClients } from "./clients.ts";
import type { NodeKeyDirectory } from "./node-keys.ts";
import { listObjects } from "./objects.ts";
import type { StateStore } from "./state.ts";

/**
 * Rates the estimate assumes, from bench/pitr.ts on a 2-core machine: a logical snapshot loads at
 * about this many bytes of dump a second, and the binary log replays at about this many bytes a
 * second (mariadb-binlog into the mariadb client).
 */
const LOAD_BYTES_PER_SECOND = 20 * 1024 * 1024;
const REPLAY_BYTES_PER_SECOND = 8 * 1024 * 1024;
/** How many index entries are read at once while the plan walks the chain. */
const BATCH = 16;

/** What a point-in-time restore will do, proven from the index before anything is downloaded. */
export interface RecoveryPlan {
  target: string;
  snapshot: { id: string; kind: BackupManifest["kind"]; node: string; consistentAt: string; coordinates: Coordinates; sourceBytes: number };
  /** The archive replayed: one server's history ("<uuid>-<epoch>"). */
  server: string;
  /** Replayed in order: from the segment holding the snapshot's coordinates to the one holding the target. */
  segments: BinlogSegment[];
  /** Read only for their file's format description: a file's first segment, when replay starts further into that file. */
  headers: BinlogSegment[];
  /** Bytes to download: segments and headers. */
  binlogBytes: number;
  /** The last event time the planned segments hold, and the first. */
  span: { from: string; to: string };
  estimate: { seconds: number; basis: string };
}

export interface PlanDeps {
  clients: AwsClients;
  bucket: string;
  store: StateStore;
  keys: NodeKeyDirectory;
}

/** A segment as its key names it: enough to find where a position lies without reading any entry. */
interface SegmentKey {
  seq: number;
  file: string;
  start: number;
  end: number;
}

/** The moment a snapshot's data stands at: a logical dump's transaction opens at its start, mariabackup's copy holds at its end. */
function consistentAt(manifest: BackupManifest): string {
  return manifest.kind === "logical" ? manifest.startedAt : manifest.finishedAt;
}

/** GTID positions ("0-1-10,1-2-5") by domain: the sequence number reached in each. */
export function gtidPositions(text: string): Map<number, { server: number; seq: bigint }> {
  const out = new Map<number, { server: number; seq: bigint }>();
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [domain, server, seq] = part.split("-");
    if (domain !== undefined && server !== undefined && seq !== undefined) out.set(Number(domain), { server: Number(server), seq: BigInt(seq) });
  }
  return out;
}

function parseGtid(text: string): { domain: number; server: number; seq: bigint } {
  const [domain, server, seq] = text.split("-");
  return { domain: Number(domain), server: Number(server), seq: BigInt(seq ?? "0") };
}

/**
 * Whether the segment holding a snapshot's coordinates is of that snapshot's history: where both
 * have GTIDs of a domain, the snapshot's next transaction falls in the segment's range. Two
 * unrelated servers can have the same file names and positions; they do not have the same
 * GTIDs there.
 */
function agreesWithSnapshot(segment: BinlogSegment, manifest: BackupManifest): boolean {
  const at = gtidPositions(manifest.coordinates.gtid);
  for (const [domain, range] of Object.entries(segment.gtids ?? {})) {
    const snapshot = at.get(Number(domain));
    if (!snapshot) continue;
    const [first, last] = [parseGtid(range.first), parseGtid(range.last)];
    if (first.seq > snapshot.seq + 1n || last.seq < snapshot.seq - 1n) return false;
  }
  return true;
}

/** Whether a snapshot's data stands before the target, so replaying from it can reach the target. */
function precedes(manifest: BackupManifest, target: RestoreTarget): boolean {
  switch (target.kind) {
    case "latest":
      return true;
    case "time":
      return Date.parse(consistentAt(manifest)) < target.seconds * 1000;
    case "gtid": {
      const reached = gtidPositions(manifest.coordinates.gtid).get(target.domain);
      return reached === undefined || reached.seq < target.seq;
    }
    case "position": {
      const [a, b] = [binlogFileNumber(manifest.coordinates.file), binlogFileNumber(target.file)];
      return a < b || (a === b && manifest.coordinates.position <= target.position);
    }
  }
}

/** Whether a segment's entry shows the target inside it or behind it: the chain need go no further. */
function reaches(segment: BinlogSegment, target: RestoreTarget): boolean {
  switch (target.kind) {
    case "latest":
      return false;
    case "time":
      return Date.parse(segment.lastEventAt) >= target.seconds * 1000;
    case "gtid": {
      const range = segment.gtids?.[String(target.domain)];
      return range !== undefined && parseGtid(range.last).seq >= target.seq;
    }
    case "position":
      // The segment holding the event at the position (one ending there holds the event before it).
      return binlogFileNumber(segment.file) > binlogFileNumber(target.file) || (segment.file === target.file && segment.end > target.position);
  }
}

/** The segment keys of one history, by sequence number (an orphan of a dead run may share a number: the index decides later). */
async function segmentKeys(deps: PlanDeps, server: string): Promise<SegmentKey[]> {
  const prefix = binlogKeys.segments(server);
  const out: SegmentKey[] = [];
  for (const object of await listObjects(deps.clients, deps.bucket, prefix)) {
    const m = /^([0-9]{10})-(.+)-([0-9]+)-([0-9]+)$/.exec(object.key.slice(prefix.length));
    if (m) out.push({ seq: Number(m[1]), file: m[2]!, start: Number(m[3]), end: Number(m[4]) });
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** The segment a position lies in: the later of two when it falls on the boundary between them. */
function holding(keys: readonly SegmentKey[], at: Coordinates): SegmentKey | undefined {
  const inFile = keys.filter((k) => k.file === at.file && k.start <= at.position && at.position <= k.end);
  return inFile.find((k) => k.start === at.position && k.end > at.position) ?? inFile.at(-1);
}

/**
 * Plans a point-in-time restore: the newest complete snapshot whose data stands before the
 * target, the server history whose archive holds that snapshot's coordinates, and every segment
 * from there to the one holding the target, each index entry signed and following the one before
 * without a gap. Refuses, naming the problem, when no snapshot is old enough, no archive holds
 * a snapshot's coordinates, the chain breaks, or the archive ends before the target. Reads the
 * index only; the segments' bytes are checked against their SHA-256 where they are downloaded.
 */
export async function planRecovery(deps: PlanDeps, request: { to: RestoreTarget; snapshot?: string }): Promise<RecoveryPlan> {
  const snapshots = (await listSnapshots(deps)).flatMap((s) => (s.status === "complete" && s.manifest.kind !== "ebs" ? [s.manifest] : []));
  const named = request.snapshot ? snapshots.filter((m) => m.snapshot === request.snapshot) : snapshots;
  if (request.snapshot && named.length === 0) throw new BackupError("SNAPSHOT_NONE", `snapshot ${request.snapshot} is not a complete logical or physical snapshot in s3://${deps.bucket}/backups/`);
  const usable = named.filter((m) => precedes(m, request.to));
  if (usable.length === 0) {
    const oldest = snapshots.at(-1);
    throw new BackupError(
      "TARGET_BEFORE_SNAPSHOTS",
      oldest
        ? `${request.to.text} is older than every ${request.snapshot ? "named " : ""}snapshot: the oldest complete one, ${oldest.snapshot}, stands at ${consistentAt(oldest)} (GTID ${oldest.coordinates.gtid || "none"}); nothing can be restored to a point before it`
        : `there is no complete logical or physical snapshot in s3://${deps.bucket}/backups/ to start from`,
    );
  }
  const histories = await listBinlogServers(deps.clients, deps.bucket);
  const keysOf = new Map<string, SegmentKey[]>();
  const problems: string[] = [];
  for (const manifest of usable) {
    // A primary's snapshot stands in its own log (newest epoch first); a replica's in its primary's, another server's history.
    const own = (h: string) => h.startsWith(`${manifest.server.uuid}-`);
    const ordered = histories.filter((h) => (manifest.server.role === "primary" ? own(h) : !own(h))).sort((a, b) => epochOf(b) - epochOf(a));
    for (const server of ordered) {
      if (!keysOf.has(server)) keysOf.set(server, await segmentKeys(deps, server));
      const first = holding(keysOf.get(server)!, manifest.coordinates);
      if (!first) continue;
      const chain = await walk(deps, server, keysOf.get(server)!, first, request.to);
      if (chain.ok && !agreesWithSnapshot(chain.segments[0]!, manifest)) continue;
      if (!chain.ok) {
        problems.push(`${manifest.snapshot} in ${server}: ${chain.problem}`);
        continue;
      }
      const segments = chain.segments;
      const headers = segments[0]!.start > 0 ? [await fileHeader(deps, server, keysOf.get(server)!, segments[0]!)] : [];
      const binlogBytes = [...headers, ...segments].reduce((sum, s) => sum + s.bytes, 0);
      const seconds = Math.ceil(manifest.sourceBytes / LOAD_BYTES_PER_SECOND + binlogBytes / REPLAY_BYTES_PER_SECOND);
      return {
        target: request.to.text,
        snapshot: { id: manifest.snapshot, kind: manifest.kind, node: manifest.node, consistentAt: consistentAt(manifest), coordinates: manifest.coordinates, sourceBytes: manifest.sourceBytes },
        server,
        segments,
        headers,
        binlogBytes,
        span: { from: segments[0]!.firstEventAt, to: segments.at(-1)!.lastEventAt },
        estimate: { seconds, basis: `loading at ${LOAD_BYTES_PER_SECOND / 1048576} MiB/s and replaying at ${REPLAY_BYTES_PER_SECOND / 1048576} MiB/s` },
      };
    }
    if (problems.length === 0) problems.push(`${manifest.snapshot}: no binary-log archive holds its coordinates ${manifest.coordinates.file}:${manifest.coordinates.position}`);
  }
  const code = problems.some((p) => p.includes("the archive ends")) && problems.every((p) => p.includes("the archive ends")) ? "BINLOG_ENDS_BEFORE_TARGET" : "BINLOG_CHAIN_BROKEN";
  throw new BackupError(code, `no unbroken binary-log chain leads from a snapshot to ${request.to.text}: ${problems.slice(0, 5).join("; ")}`);
}

function epochOf(server: string): number {
  return Number(server.split("-").at(-1));
}

type Walk = { ok: true; segments: BinlogSegment[] } | { ok: false; problem: string };

/** Reads the index from `first` on, entry by entry in batches, until the target is held: each entry signed, in sequence, following the one before. */
async function walk(deps: PlanDeps, server: string, keys: readonly SegmentKey[], first: SegmentKey, target: RestoreTarget): Promise<Walk> {
  // The index says how far the chain goes; a segment object missing from its end is a missing piece, not the end.
  const indexed = (await listObjects(deps.clients, deps.bucket, binlogKeys.index(server))).map((o) => Number(/([0-9]{10})\.json$/.exec(o.key)?.[1])).filter(Number.isFinite);
  const last = Math.max(keys.at(-1)!.seq, ...indexed);
  const stored = new Set(keys.map((k) => `${binlogKeys.segmentPrefix(server, k.seq)}${k.file}-${k.start}-${k.end}`));
  const segments: BinlogSegment[] = [];
  for (let seq = first.seq; seq <= last; seq += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, last - seq + 1) }, (_, i) => seq + i);
    const entries = await Promise.all(batch.map((n) => readIndexEntry(deps, server, binlogKeys.entry(server, n))));
    for (const entry of entries) {
      if (!entry.ok) return { ok: false, problem: `index entry ${entry.key}: ${entry.problem}` };
      const segment = entry.segment;
      const previous = segments.at(-1);
      const gap = previous && continues(previous, segment);
      if (gap) return { ok: false, problem: `segment ${segment.seq}: ${gap}` };
      if (segments.length === 0 && (segment.file !== first.file || segment.start !== first.start)) return { ok: false, problem: `index entry ${entry.key} names ${segment.file}:${segment.start}, not the segment stored under its number` };
      if (!stored.has(segment.key)) return { ok: false, problem: `segment ${segment.seq}: ${segment.key} is missing` };
      segments.push(segment);
      if (target.kind === "gtid" && reaches(segment, target)) {
        const range = segment.gtids![String(target.domain)]!;
        const servers = [parseGtid(range.first).server, parseGtid(range.last).server];
        if (!servers.includes(target.server)) return { ok: false, problem: `${target.text} is not in this history: in segment ${segment.seq}, domain ${target.domain} goes from ${range.first} to ${range.last}` };
      }
      if (reaches(segment, target)) return { ok: true, segments };
    }
  }
  if (target.kind === "latest") return segments.length ? { ok: true, segments } : { ok: false, problem: "the archive has no segments" };
  const end = segments.at(-1);
  return { ok: false, problem: `the archive ends before ${target.text}: its last segment, ${end?.seq}, ends at ${end?.file}:${end?.end} with an event of ${end?.lastEventAt} (use --to latest for everything shipped)` };
}

/** The first segment of the file replay starts in: mariadb-binlog reads a file's format description from its start. */
async function fileHeader(deps: PlanDeps, server: string, keys: readonly SegmentKey[], from: BinlogSegment): Promise<BinlogSegment> {
  const key = keys.find((k) => k.file === from.file && k.start === 0);
  if (!key) throw new BackupError("BINLOG_CHAIN_BROKEN", `${server} has no segment of ${from.file} from its beginning: its format description is missing, so replay cannot start at ${from.file}:${from.start}`);
  const entry = await readIndexEntry(deps, server, binlogKeys.entry(server, key.seq));
  if (!entry.ok) throw new BackupError("BINLOG_CHAIN_BROKEN", `index entry ${entry.key}: ${entry.problem}`);
  return entry.segment;
}
