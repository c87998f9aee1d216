import { createHash } from "node:crypto";
import { binlogSegmentRecord, dbPrimaryRecord, errorMessage, type BinlogSegment, type DbPrimary } from "@bosun/core";
import type { AwsClients } from "./clients.ts";
import type { NodeKeyDirectory } from "./node-keys.ts";
import { downloadStream, listObjects, listPrefixes } from "./objects.ts";
import type { StateStore } from "./state.ts";
import { verifyNodeRecord } from "./verify.ts";

/** Every segment key of one sequence number starts so (one, unless a run died between its upload and its index entry). */
function segmentPrefix(server: string, seq: number): string {
  return `backups/binlog/${server}/segments/${String(seq).padStart(10, "0")}-`;
}

/**
 * Where the binary-log archive lives: one folder per server history ("<uuid>-<epoch>"), with an
 * index of one signed record per segment (named by its sequence number, so a listing is in
 * order) and the segments' raw bytes beside it.
 */
export const binlogKeys = {
  root: "backups/binlog/",
  server: (server: string) => `backups/binlog/${server}/`,
  index: (server: string) => `backups/binlog/${server}/index/`,
  entry: (server: string, seq: number) => `backups/binlog/${server}/index/${String(seq).padStart(10, "0")}.json`,
  segments: (server: string) => `backups/binlog/${server}/segments/`,
  segmentPrefix,
  segment: (server: string, seq: number, file: string, start: number, end: number) => `${segmentPrefix(server, seq)}${file}-${start}-${end}`,
};

/** The sequence number an index key names. */
function seqOf(key: string): number {
  return Number(/([0-9]{10})\.json$/.exec(key)?.[1] ?? Number.NaN);
}

export type ReadEntry = { ok: true; key: string; segment: BinlogSegment } | { ok: false; key: string; problem: string };

/** An index entry as its record proves it: signed by the node that shipped it, about this server and this sequence number. */
export async function readIndexEntry(deps: { store: StateStore; keys: NodeKeyDirectory }, server: string, key: string): Promise<ReadEntry> {
  const raw = await deps.store.get(key);
  if (raw === undefined) return { ok: false, key, problem: "it is missing" };
  const read = await verifyNodeRecord(raw, binlogSegmentRecord, deps.keys);
  if (!read.ok) return { ok: false, key, problem: `it is refused: ${read.error.reason}: ${read.error.detail}` };
  const segment = read.value.payload;
  if (segment.node !== read.value.node || segment.server !== server || segment.seq !== seqOf(key)) {
    return { ok: false, key, problem: `it names node ${segment.node}, server ${segment.server} and segment ${segment.seq}, signed by node ${read.value.node}` };
  }
  return { ok: true, key, segment };
}

/**
 * The last entry of a server's index, or undefined when it has none. `hint` (a sequence number
 * known to exist, kept by the shipper on its disk) starts the listing there, so a long history
 * is not listed whole at every start; a hint S3 does not confirm is ignored.
 */
export async function lastIndexEntry(deps: { clients: AwsClients; bucket: string; store: StateStore; keys: NodeKeyDirectory }, server: string, hint?: number): Promise<ReadEntry | undefined> {
  const prefix = binlogKeys.index(server);
  let keys = hint ? (await listObjects(deps.clients, deps.bucket, prefix, { startAfter: binlogKeys.entry(server, hint - 1) })).map((o) => o.key) : [];
  if (hint && keys[0] !== binlogKeys.entry(server, hint)) keys = [];
  if (keys.length === 0) keys = (await listObjects(deps.clients, deps.bucket, prefix)).map((o) => o.key);
  const last = keys.filter((k) => Number.isFinite(seqOf(k))).sort().at(-1);
  return last ? readIndexEntry(deps, server, last) : undefined;
}

/** The server histories in the bucket ("<uuid>-<epoch>"). */
export async function listBinlogServers(clients: AwsClients, bucket: string): Promise<string[]> {
  return (await listPrefixes(clients, bucket, binlogKeys.root)).map((p) => p.slice(binlogKeys.root.length, -1)).sort();
}

/** The number a binary-log file name ends with (mariadb-bin.000042 → 42). */
export function binlogFileNumber(file: string): number {
  return Number(/\.([0-9]+)$/.exec(file)?.[1] ?? Number.NaN);
}

/** Whether `next` follows `previous` in one server's binary log without a byte missing between them. */
export function continues(previous: Pick<BinlogSegment, "file" | "end" | "closes">, next: Pick<BinlogSegment, "file" | "start">): string | undefined {
  if (next.file === previous.file) return next.start === previous.end ? undefined : `${next.file} continues at ${next.start}, but the segment before ends at ${previous.end}`;
  if (!previous.closes) return `${previous.file} was shipped up to ${previous.end} only, and the next segment is of ${next.file}`;
  if (binlogFileNumber(next.file) !== binlogFileNumber(previous.file) + 1) return `${next.file} follows ${previous.file}: the files between are missing`;
  return next.start === 0 ? undefined : `${next.file} starts at ${next.start}, not at its beginning`;
}

export interface ChainReport {
  server: string;
  ok: boolean;
  segments: number;
  bytes: number;
  first?: { file: string; start: number; at: string };
  last?: { file: string; end: number; at: string };
  /** Each break in the chain, naming the index entry or the segment and what is wrong with it. */
  problems: string[];
  /** Segment objects no index entry names (an upload whose entry was never written): not part of the chain. */
  unindexed: string[];
  durationMs: number;
}

/**
 * Proves a server's archive whole: every index entry signed and in sequence (1, 2, 3, …), each
 * segment starting where the one before ends (a new file only after the last one closed, and
 * the next file by number), and every segment's bytes present with the size and SHA-256 its
 * entry records. Returns every problem found, not only the first.
 */
export async function verifyChain(deps: { clients: AwsClients; bucket: string; store: StateStore; keys: NodeKeyDirectory }, server: string, options: { signal?: AbortSignal } = {}): Promise<ChainReport> {
  const started = Date.now();
  const problems: string[] = [];
  const indexKeys = (await listObjects(deps.clients, deps.bucket, binlogKeys.index(server))).map((o) => o.key).sort();
  const stored = new Map((await listObjects(deps.clients, deps.bucket, binlogKeys.segments(server))).map((o) => [o.key, o.bytes]));
  const entries = await mapLimited(indexKeys, 8, (key) => readIndexEntry(deps, server, key));
  let previous: BinlogSegment | undefined;
  let expected = 1;
  const report: Omit<ChainReport, "ok" | "durationMs"> = { server, segments: 0, bytes: 0, problems, unindexed: [] };
  const indexed = new Set<string>();
  for (const entry of entries) {
    if (!entry.ok) {
      problems.push(`index entry ${entry.key}: ${entry.problem}`);
      previous = undefined;
      expected = seqOf(entry.key) + 1;
      continue;
    }
    const s = entry.segment;
    indexed.add(s.key);
    if (s.seq !== expected) problems.push(`segment ${expected}${s.seq - 1 > expected ? ` to ${s.seq - 1}` : ""} missing from the index: it goes from ${expected - 1} to ${s.seq}`);
    else if (previous) {
      const gap = continues(previous, s);
      if (gap) problems.push(`segment ${s.seq}: ${gap}`);
    }
    if (!stored.has(s.key)) problems.push(`segment ${s.seq}: ${s.key} is missing`);
    else if (stored.get(s.key) !== s.bytes) problems.push(`segment ${s.seq}: ${s.key} holds ${stored.get(s.key)} bytes; its index entry records ${s.bytes}`);
    report.segments += 1;
    report.bytes += s.bytes;
    report.first ??= { file: s.file, start: s.start, at: s.firstEventAt };
    report.last = { file: s.file, end: s.end, at: s.lastEventAt };
    previous = s;
    expected = s.seq + 1;
  }
  const present = entries.flatMap((e) => (e.ok && stored.get(e.segment.key) === e.segment.bytes ? [e.segment] : []));
  const digests = await mapLimited(present, 8, async (s) => ({ s, sha256: await storedSha256(deps.clients, deps.bucket, s.key, options.signal).catch((error: unknown) => `unreadable: ${errorMessage(error)}`) }));
  for (const { s, sha256 } of digests) if (sha256 !== s.sha256) problems.push(`segment ${s.seq}: ${s.key} does not match its index entry: SHA-256 ${sha256.slice(0, 16)}…, recorded ${s.sha256.slice(0, 16)}…`);
  report.unindexed = [...stored.keys()].filter((k) => !indexed.has(k));
  return { ...report, ok: problems.length === 0 && entries.length > 0, ...(entries.length === 0 ? { problems: ["the index has no entries"] } : {}), durationMs: Date.now() - started };
}

/** The SHA-256 of an object's bytes as S3 holds them, or "missing". */
export async function storedSha256(clients: AwsClients, bucket: string, key: string, signal?: AbortSignal): Promise<string> {
  const download = await downloadStream(clients, { bucket, key, ...(signal ? { signal } : {}) });
  if (!download) return "missing";
  const hash = createHash("sha256");
  for await (const chunk of download.body) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** `fn` over `items`, at most `limit` at a time, results in order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/** Where the cluster's primary is named (see dbPrimaryRecord). */
export const dbPrimaryKey = "state/db/primary.json";

export type PrimaryRead = { ok: true; primary: DbPrimary | undefined; etag?: string } | { ok: false; problem: string; etag: string };

/** The cluster's primary as its signed record says (undefined: no promotion yet), with the ETag a conditional write names. */
export async function readPrimary(deps: { store: StateStore; keys: NodeKeyDirectory }): Promise<PrimaryRead> {
  const current = await deps.store.getVersioned(dbPrimaryKey);
  if (!current) return { ok: true, primary: undefined };
  const read = await verifyNodeRecord(current.value, dbPrimaryRecord, deps.keys);
  if (!read.ok) return { ok: false, problem: `${dbPrimaryKey} is refused: ${read.error.reason}: ${read.error.detail}`, etag: current.etag };
  if (read.value.payload.node !== read.value.node) return { ok: false, problem: `${dbPrimaryKey} names ${read.value.payload.node} but is signed by ${read.value.node}`, etag: current.etag };
  return { ok: true, primary: read.value.payload, etag: current.etag };
}
