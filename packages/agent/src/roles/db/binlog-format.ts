import { BosunError } from "@bosun/core";

/** A binary-log file's first four bytes. */
export const BINLOG_MAGIC = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);
/** A v4 event header: timestamp (4), type (1), server id (4), event length (4), next position (4), flags (2). */
export const EVENT_HEADER_BYTES = 19;
const QUERY_EVENT = 2;
const STOP_EVENT = 3;
export const ROTATE_EVENT = 4;
const XID_EVENT = 16;
/** MariaDB's GTID event: it opens each transaction (or stands alone before a DDL statement). */
const GTID_EVENT = 162;
/** A GTID event's flag: its transaction is one statement with no COMMIT of its own (DDL). */
const FL_STANDALONE = 0x01;

/** A binary log that is not what its headers say (a bad magic, a length or position that does not add up). */
export class BinlogFormatError extends BosunError {}

/** Complete events found in a run of bytes read from a binary-log file. */
export interface EventRun {
  /** File offset just after the last complete event: the only place a segment may end. */
  end: number;
  events: number;
  /** Header timestamps (seconds) of the first and last event; 0 when the run has none. */
  firstTimestamp: number;
  lastTimestamp: number;
  /** The last event ends its file (a rotate or stop event): nothing more is written to it. */
  closes: boolean;
  /** The first and last GTID opened in the run, by replication domain ("domain-server-seq"). */
  gtids: Record<string, { first: string; last: string }>;
}

/**
 * Walks the event headers in `bytes`, which hold the file's bytes from offset `start` (0, or
 * where an earlier segment ended: always an event boundary). Only the headers are read: each
 * event's length (offset 9) and the position after it (offset 13), which must agree. A partial
 * trailing event is left out, so a run always ends where an event ends.
 */
export function completeEvents(bytes: Buffer, start: number): EventRun {
  let at = 0;
  if (start === 0) {
    if (bytes.length < BINLOG_MAGIC.length) return { end: 0, events: 0, firstTimestamp: 0, lastTimestamp: 0, closes: false, gtids: {} };
    if (!bytes.subarray(0, 4).equals(BINLOG_MAGIC)) throw new BinlogFormatError("BINLOG_BAD_MAGIC", `the file does not start with the binary log's magic bytes (found ${bytes.subarray(0, 4).toString("hex")})`);
    at = 4;
  }
  const run: EventRun = { end: start, events: 0, firstTimestamp: 0, lastTimestamp: 0, closes: false, gtids: {} };
  while (at + EVENT_HEADER_BYTES <= bytes.length) {
    const length = bytes.readUInt32LE(at + 9);
    const next = bytes.readUInt32LE(at + 13);
    if (length < EVENT_HEADER_BYTES) throw new BinlogFormatError("BINLOG_BAD_EVENT", `the event at ${start + at} claims ${length} bytes, less than its own header`);
    // In a server's own binary log the header's next position is where the event ends in the file.
    if (next !== start + at + length) throw new BinlogFormatError("BINLOG_BAD_EVENT", `the event at ${start + at} is ${length} bytes long but says the next starts at ${next}`);
    if (at + length > bytes.length) break;
    const timestamp = bytes.readUInt32LE(at);
    // A file's first event (its format description) may carry no time: the first that has one counts.
    if (run.firstTimestamp === 0) run.firstTimestamp = timestamp;
    run.lastTimestamp = timestamp || run.lastTimestamp;
    run.closes = bytes[at + 4] === ROTATE_EVENT || bytes[at + 4] === STOP_EVENT;
    if (bytes[at + 4] === GTID_EVENT) {
      const gtid = readGtid(bytes.subarray(at, at + length));
      const domain = (run.gtids[String(gtid.domain)] ??= { first: gtid.text, last: gtid.text });
      domain.last = gtid.text;
    }
    run.events += 1;
    at += length;
    run.end = start + at;
  }
  return run;
}

/** The length of the event whose header starts `bytes` (read before reading the whole of a large event). */
export function eventLength(header: Buffer): number | undefined {
  return header.length >= EVENT_HEADER_BYTES ? header.readUInt32LE(9) : undefined;
}

/** A MariaDB GTID: replication domain, originating server, sequence number. */
export interface Gtid {
  domain: number;
  server: number;
  seq: bigint;
  text: string;
}

/** The GTID a GTID event opens: its header's server id, then its body's sequence number (8 bytes) and domain (4). */
function readGtid(event: Buffer): Gtid & { standalone: boolean } {
  const server = event.readUInt32LE(5);
  const seq = event.readBigUInt64LE(EVENT_HEADER_BYTES);
  const domain = event.readUInt32LE(EVENT_HEADER_BYTES + 8);
  const flags = event[EVENT_HEADER_BYTES + 12] ?? 0;
  return { domain, server, seq, text: `${domain}-${server}-${seq}`, standalone: (flags & FL_STANDALONE) !== 0 };
}

/** One event as a replay needs it: where it starts and ends in its file, its time, and what it does to transactions. */
export interface ScannedEvent {
  offset: number;
  end: number;
  timestamp: number;
  /** The GTID of the transaction this event opens. */
  opens?: Gtid;
  /** The transaction ends with this event (its XID, its COMMIT, or the one statement a standalone GTID announced). */
  commits: boolean;
}

/**
 * Reads the events of a run of file bytes (from `start`, an event boundary) one by one, saying
 * where each transaction opens and ends: what a point-in-time replay needs to stop exactly before
 * a transaction and to know which transactions a stretch of the log holds whole.
 */
export function* scanEvents(bytes: Buffer, start: number): Generator<ScannedEvent> {
  let at = start === 0 ? 4 : 0;
  if (start === 0 && !bytes.subarray(0, 4).equals(BINLOG_MAGIC)) throw new BinlogFormatError("BINLOG_BAD_MAGIC", `the file does not start with the binary log's magic bytes (found ${bytes.subarray(0, 4).toString("hex")})`);
  let standaloneOpen = false;
  while (at + EVENT_HEADER_BYTES <= bytes.length) {
    const length = bytes.readUInt32LE(at + 9);
    if (length < EVENT_HEADER_BYTES || bytes.readUInt32LE(at + 13) !== start + at + length) throw new BinlogFormatError("BINLOG_BAD_EVENT", `the event at ${start + at} has a length or next position that does not add up`);
    if (at + length > bytes.length) return;
    const event = bytes.subarray(at, at + length);
    const type = event[4];
    const scanned: ScannedEvent = { offset: start + at, end: start + at + length, timestamp: event.readUInt32LE(0), commits: false };
    if (type === GTID_EVENT) {
      const gtid = readGtid(event);
      scanned.opens = { domain: gtid.domain, server: gtid.server, seq: gtid.seq, text: gtid.text };
      standaloneOpen = gtid.standalone;
    } else if (type === XID_EVENT) {
      scanned.commits = true;
    } else if (type === QUERY_EVENT) {
      scanned.commits = standaloneOpen || /^(COMMIT|ROLLBACK)\b/.test(queryText(event));
      standaloneOpen = false;
    }
    yield scanned;
    at += length;
  }
}

/** The statement a query event carries (the start of it: enough to tell COMMIT from the rest). */
function queryText(event: Buffer): string {
  // Post-header: thread id (4), exec time (4), schema length (1), error code (2), status variables' length (2).
  const post = EVENT_HEADER_BYTES;
  if (event.length < post + 13) return "";
  const schemaLength = event[post + 8]!;
  const statusLength = event.readUInt16LE(post + 11);
  const text = post + 13 + statusLength + schemaLength + 1;
  return event.subarray(text, Math.min(event.length, text + 16)).toString("latin1");
}
