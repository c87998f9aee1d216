import { BosunError } from "@bosun/core";

/** A binary-log file's first four bytes. */
export const BINLOG_MAGIC = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);
/** A v4 event header: timestamp (4), type (1), server id (4), event length (4), next position (4), flags (2). */
export const EVENT_HEADER_BYTES = 19;
const STOP_EVENT = 3;
const ROTATE_EVENT = 4;

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
    if (bytes.length < BINLOG_MAGIC.length) return { end: 0, events: 0, firstTimestamp: 0, lastTimestamp: 0, closes: false };
    if (!bytes.subarray(0, 4).equals(BINLOG_MAGIC)) throw new BinlogFormatError("BINLOG_BAD_MAGIC", `the file does not start with the binary log's magic bytes (found ${bytes.subarray(0, 4).toString("hex")})`);
    at = 4;
  }
  const run: EventRun = { end: start, events: 0, firstTimestamp: 0, lastTimestamp: 0, closes: false };
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
