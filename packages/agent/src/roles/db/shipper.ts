import { createHash } from "node:crypto";
import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PreconditionFailed, abortableDelay, binlogFileNumber, binlogKeys, lastIndexEntry, listObjects, putNewObject, storedSha256 } from "@bosun/aws";
import { BosunError, errorMessage, type BinlogSegment, type DbSettings, type Logger } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { BinlogFormatError, EVENT_HEADER_BYTES, completeEvents, eventLength } from "./binlog-format.ts";
import type { BinaryLogs, DatabaseEngine } from "./engine.ts";

/** Shipping cannot go on as it is (another writer in this server's index, a segment in S3 that is not ours). */
export class ShippingError extends BosunError {}

type Shipping = DbSettings["shipping"];
export type ShipperState = "idle" | "shipping" | "paused" | "fenced" | "stopping" | "stopped";

/** Where the archive of this server's history ends: the next byte to ship is `end` of `file`, or the next file when `closes`. */
interface ChainEnd {
  server: string;
  seq: number;
  file?: string;
  end: number;
  closes: boolean;
}

/** Complete events cut from a file, ready to go up as one segment. */
interface Cut {
  bytes: Buffer;
  end: number;
  events: number;
  firstTimestamp: number;
  lastTimestamp: number;
  closes: boolean;
  gtids: Record<string, { first: string; last: string }>;
}

/** What one pass found to ship: a file, where to start, and how far the server has written it whole. */
interface Next {
  file: string;
  path: string;
  start: number;
  limit: number;
  /** Cut no further than this: the end of a segment an earlier run uploaded without its index entry, to be adopted as it is. */
  cap?: number;
  closed: boolean;
}

const MAX_BACKOFF_MS = 30_000;
/** How often the cluster's primary record is read again (a GET): an old primary stops shipping within about this long of a promotion. */
const FENCE_CHECK_MS = 5_000;
/** How long a stop waits for the segment under way before it cuts its upload off. */
const STOP_GRACE_MS = 10_000;

/**
 * Follows this server's binary log and ships it to S3 as immutable segments, at least once an
 * interval while there are new bytes: the closed files and the one the server is writing, cut
 * where an event ends, the bytes exactly as the server wrote them. Each segment gets the next
 * sequence number and a signed index entry, both written with If-None-Match, so nothing is ever
 * overwritten and a second shipper for the same history is refused. After a restart it goes on
 * from the index's last entry; while S3 (or the server) is away it keeps its place and retries
 * with backoff, and says so in alert events; a file purged before it was shipped to its end is
 * an alert naming the gap.
 *
 * It reads the files on the node's disk, found through the server's binlog index (SHOW BINARY
 * LOGS, @@log_bin_basename), rather than acting as a replica or running mariadb-binlog: the bytes
 * are the server's own file bytes (no decode and re-encode), a byte offset in the file is the
 * position every tool and the snapshots' coordinates use, a restart resumes at an offset with
 * no replication state on the server, and the server's files are the spool while S3 is away.
 * The cost: the agent must run on the database's node with read access to its binary logs.
 */
export class BinlogShipper {
  readonly #services: RoleServices;
  readonly #engine: DatabaseEngine;
  readonly #options: Shipping;
  readonly #log: Logger;
  readonly #fence: (() => Promise<string | undefined>) | undefined;
  /** Why this node must not ship (another node is primary), as last read, and when. */
  #fenced: { reason: string | undefined; at: number } = { reason: undefined, at: 0 };
  #shipping = false;
  #paused = 0;
  #chain: ChainEnd | undefined;
  /** A segment in S3 with no index entry yet: the next cut stops at its end, so it is adopted rather than sent again. */
  #orphan: { file: string; start: number; end: number; sha256?: string } | undefined;
  /** The loop's own way out; `#wake` cuts a wait short (a resume, a stop); `#cutOff` aborts an upload a stop waited too long for. */
  readonly #stop = new AbortController();
  readonly #cutOff = new AbortController();
  #wake = new AbortController();
  #stopped = false;
  #loop: Promise<void> | undefined;
  #pass: Promise<unknown> = Promise.resolve();
  #failures = 0;
  #pendingSince: number | undefined;
  /** When the current run of failed passes began. */
  #failingSince: number | undefined;
  #alerted = { stalled: false, behind: false };
  /** A closed file with nothing whole left in it (said once), and the gaps already reported. */
  #finished: string | undefined;
  readonly #gaps = new Set<string>();
  /** Totals since this shipper started, for tests and measurements. */
  readonly shipped = { segments: 0, bytes: 0 };
  #lastShippedAt: string | undefined;
  readonly #shippedListeners: (() => void)[] = [];
  readonly #written: (() => { file: string; position: number } | undefined) | undefined;

  constructor(
    deps: {
      services: RoleServices;
      engine: DatabaseEngine;
      fence?: () => Promise<string | undefined>;
      /** How far the server has written, as zero-loss mode's replication stream saw it (undefined: ask the server). */
      written?: () => { file: string; position: number } | undefined;
    },
    options: Shipping,
  ) {
    this.#services = deps.services;
    this.#written = deps.written;
    this.#engine = deps.engine;
    this.#fence = deps.fence;
    this.#options = options;
    this.#log = deps.services.logger.child({ role: "db", part: "binlog-shipper" });
  }

  get state(): ShipperState {
    if (this.#stopped) return "stopped";
    if (this.#stop.signal.aborted) return "stopping";
    if (this.#paused > 0) return "paused";
    if (this.#fenced.reason) return "fenced";
    return this.#shipping ? "shipping" : "idle";
  }

  /** How far the archive in S3 goes (the last index entry written), once known. */
  durableEnd(): { file: string; end: number; closes: boolean } | undefined {
    const chain = this.#chain;
    return chain?.file ? { file: chain.file, end: chain.end, closes: chain.closes } : undefined;
  }

  /** Cuts the wait before the next pass short: something is waiting to be shipped now. */
  shipNow(): void {
    this.#wake.abort();
  }

  /** Called after every segment that reaches S3 with its index entry. */
  onShipped(fn: () => void): void {
    this.#shippedListeners.push(fn);
  }

  /** What heartbeats report: the state, the history shipped, and how far behind the server the archive is. */
  status(): { state: ShipperState; server?: string; lastSeq?: number; lastShippedAt?: string; behindSeconds: number } {
    const since = this.#pendingSince ?? this.#failingSince;
    return {
      state: this.state,
      ...(this.#chain ? { server: this.#chain.server, lastSeq: this.#chain.seq } : {}),
      ...(this.#lastShippedAt ? { lastShippedAt: this.#lastShippedAt } : {}),
      behindSeconds: since === undefined ? 0 : Math.round((Date.now() - since) / 1000),
    };
  }

  start(): void {
    if (this.#loop || this.#stop.signal.aborted || this.#options.enabled === "off") return;
    this.#loop = this.#run();
  }

  /** Runs `fn` (a restore) with shipping paused, then ships again: from the new epoch's history if `fn` started one. */
  async pausedWhile<T>(fn: () => Promise<T>): Promise<T> {
    this.#paused += 1;
    await this.#pass;
    try {
      return await fn();
    } finally {
      this.#paused -= 1;
      this.#chain = undefined;
      this.#wake.abort();
    }
  }

  /** Lets the pass under way finish (its segment and index entry) for a while, then stops. Safe to call twice. */
  async close(): Promise<void> {
    this.#stop.abort();
    this.#wake.abort();
    const grace = new AbortController();
    await Promise.race([this.#loop, abortableDelay(STOP_GRACE_MS, grace.signal)]);
    grace.abort();
    this.#cutOff.abort();
    await this.#loop;
    this.#stopped = true;
  }

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      let wait = this.#options.intervalMs;
      if (this.#paused === 0) {
        const pass = this.#shipOnce();
        this.#pass = pass.catch(() => undefined);
        try {
          const more = await pass;
          await this.#recovered();
          if (more) wait = 0;
        } catch (error) {
          wait = await this.#failed(error);
        }
      }
      if (wait > 0) {
        await abortableDelay(wait, AbortSignal.any([this.#stop.signal, this.#wake.signal]));
        if (this.#wake.signal.aborted) this.#wake = new AbortController();
      }
    }
  }

  /** One segment at the most; true when more is waiting to ship at once. */
  async #shipOnce(): Promise<boolean> {
    const logs = await this.#engine.binaryLogs(this.#written?.());
    this.#shipping = logs !== undefined && !(logs.replica && this.#options.enabled === "auto");
    if (!logs || !this.#shipping) return false;
    if (await this.#isFenced()) return false;
    const chain = (this.#chain ??= await this.#loadChain());
    const next = await this.#next(chain, logs);
    if (!next) {
      this.#pendingSince = undefined;
      return false;
    }
    const segment = await this.#cut(next);
    if (!segment) return this.#finishFile(chain, next, logs);
    await this.#upload(chain, next, segment);
    const more = segment.end < next.limit || (next.closed && logs.files.some((f) => binlogFileNumber(f.name) > binlogFileNumber(next.file)));
    if (!more) this.#pendingSince = undefined;
    return more;
  }

  /** Whether another node is the cluster's primary (read again every FENCE_CHECK_MS); said once when it starts and when it ends. */
  async #isFenced(): Promise<boolean> {
    if (!this.#fence || Date.now() - this.#fenced.at < FENCE_CHECK_MS) return this.#fenced.reason !== undefined;
    const reason = await this.#fence();
    const was = this.#fenced.reason;
    this.#fenced = { reason, at: Date.now() };
    if (reason && !was) await this.#alert("critical", "DB_NOT_PRIMARY", `${reason}: this server's binary log is no longer shipped; it must not take writes (make it a replica of the new primary, or promote it again)`, {});
    if (!reason && was) this.#log.warn("this node may ship again: the primary record names it, or names none");
    return reason !== undefined;
  }

  /** The end of this server's current history in S3, from its index (its last entry), or a new history. */
  async #loadChain(): Promise<ChainEnd> {
    const name = await this.#engine.archiveName();
    const server = `${name.uuid}-${name.epoch}`;
    const hint = await this.#readHint(server);
    const deps = { clients: this.#services.clients, bucket: this.#services.settings.bucket, store: this.#services.store, keys: this.#services.nodeKeyDirectory() };
    const last = await lastIndexEntry(deps, server, hint);
    if (last && !last.ok) throw new ShippingError("BINLOG_INDEX_UNREADABLE", `the last entry of ${server}'s index, ${last.key}, ${last.problem}: shipping waits until it is put right`);
    const chain = last ? { server, seq: last.segment.seq, file: last.segment.file, end: last.segment.end, closes: last.segment.closes } : { server, seq: 0, end: 0, closes: false };
    // A run killed between a segment's upload and its index entry left the next segment in S3: cut the same range, and it is adopted, not sent again.
    const orphanPrefix = binlogKeys.segmentPrefix(server, chain.seq + 1);
    const orphan = (await listObjects(deps.clients, deps.bucket, orphanPrefix))[0];
    const range = orphan && /^(.+)-([0-9]+)-([0-9]+)$/.exec(orphan.key.slice(orphanPrefix.length));
    this.#orphan = range ? { file: range[1]!, start: Number(range[2]), end: Number(range[3]) } : undefined;
    this.#log.info({ ...chain, ...(this.#orphan ? { orphan: this.#orphan } : {}) }, last ? "binlog shipping resumes where the index ends" : "binlog shipping starts a new history for this server");
    return chain;
  }

  /** Where to ship from: the rest of the file the index ends in, the file after it, or (a new history) the oldest file there is. */
  async #next(chain: ChainEnd, logs: BinaryLogs): Promise<Next | undefined> {
    let file = chain.file;
    let start = chain.end;
    if (!file) [file, start] = [logs.files[0]?.name, 0];
    else if (chain.closes || this.#finished === file) {
      const after = logs.files.find((f) => binlogFileNumber(f.name) > binlogFileNumber(file!));
      if (!after) return undefined;
      if (binlogFileNumber(after.name) !== binlogFileNumber(file) + 1) await this.#gap(chain, `${filesBetween(file, after.name).join(", ")} were purged before they were shipped`);
      [file, start] = [after.name, 0];
    } else if (!logs.files.some((f) => f.name === file)) {
      const after = logs.files.find((f) => binlogFileNumber(f.name) > binlogFileNumber(file!));
      // The server always has the file it writes: a listing without anything newer was taken during a purge; the next pass sees it whole.
      if (!after) throw new ShippingError("BINLOG_FILE_MISSING", `${file} is not in the server's binlog index, and no newer file is listed`);
      const lost = filesBetween(file, after.name);
      await this.#gap(chain, `${file} was purged before it was shipped past offset ${start}${lost.length ? `, and ${lost.join(", ")} before they were shipped at all` : ""}`);
      [file, start] = [after.name, 0];
    }
    if (!file) return undefined;
    const entry = logs.files.find((f) => f.name === file)!;
    // The newest file is shipped only as far as the server says it has written it whole; an older one is closed, to its end.
    const closed = binlogFileNumber(file) < binlogFileNumber(logs.written.file);
    const limit = closed ? await fileSize(entry.path) : file === logs.written.file ? logs.written.position : 0;
    // Listed but gone from the disk: purged since the listing (the next pass sees it gone and reports the gap), or removed by hand.
    if (limit === undefined) throw new ShippingError("BINLOG_FILE_MISSING", `${entry.path} is in the server's binlog index but could not be opened`);
    if (start >= limit && !closed) return undefined;
    if (limit > start && this.#pendingSince === undefined) this.#pendingSince = Date.now();
    const orphan = this.#orphan;
    const cap = orphan && orphan.file === file && orphan.start === start && orphan.end <= limit ? orphan.end : undefined;
    return { file, path: entry.path, start, limit, ...(cap === undefined ? {} : { cap }), closed };
  }

  /** The complete events from `start` on, as much as one segment holds (and always the whole first event). */
  async #cut(next: Next): Promise<Cut | undefined> {
    if (next.start >= next.limit) return undefined;
    const handle = await open(next.path, "r");
    try {
      const headerAt = next.start === 0 ? 4 : next.start;
      const header = Buffer.alloc(EVENT_HEADER_BYTES);
      const { bytesRead } = await handle.read(header, 0, EVENT_HEADER_BYTES, headerAt);
      const first = eventLength(header.subarray(0, bytesRead)) ?? 0;
      const want = Math.min((next.cap ?? next.limit) - next.start, Math.max(this.#options.maxSegmentMB * 1024 * 1024, headerAt - next.start + first));
      const buffer = Buffer.alloc(want);
      const read = await handle.read(buffer, 0, want, next.start);
      const bytes = buffer.subarray(0, read.bytesRead);
      const run = completeEvents(bytes, next.start);
      if (run.events === 0) return undefined;
      return { bytes: bytes.subarray(0, run.end - next.start), end: run.end, events: run.events, firstTimestamp: run.firstTimestamp, lastTimestamp: run.lastTimestamp, closes: run.closes || (next.closed && run.end === next.limit), gtids: run.gtids };
    } finally {
      await handle.close();
    }
  }

  /**
   * A closed file with nothing whole left to ship: it ended without a rotate or stop event (the
   * server crashed), or with a partial event it will never finish. Said once, then on to the next file.
   */
  async #finishFile(chain: ChainEnd, next: Next, logs: BinaryLogs): Promise<boolean> {
    if (!next.closed || this.#finished === next.file) return false;
    this.#finished = next.file;
    const left = next.limit - next.start;
    await this.#alert("warning", "BINLOG_FILE_UNFINISHED", `${next.file} ends at ${next.limit} without a closing event${left > 0 ? `, with ${left} bytes of an incomplete event after ${next.start}` : ""} (the server stopped without closing it): shipping goes on with the next file, and the chain shows a break after ${chain.file ?? next.file}:${chain.end}`, { file: next.file, position: next.start, bytes: left });
    return logs.files.some((f) => binlogFileNumber(f.name) > binlogFileNumber(next.file));
  }

  /** The segment's bytes, then its signed index entry: both only if new, so a crash between them leaves a segment the next pass adopts. */
  async #upload(chain: ChainEnd, next: Next, cut: Cut): Promise<void> {
    const seq = chain.seq + 1;
    const key = binlogKeys.segment(chain.server, seq, next.file, next.start, cut.end);
    const sha256 = createHash("sha256").update(cut.bytes).digest("hex");
    const bucket = this.#services.settings.bucket;
    const orphan = this.#orphan;
    // Already up (an earlier pass or run stopped before its index entry): not sent again, only checked.
    const uploaded = orphan?.file === next.file && orphan.start === next.start && orphan.end === cut.end;
    if (!uploaded || orphan.sha256 !== sha256) {
      try {
        if (!uploaded) await putNewObject(this.#services.clients, { bucket, key, body: cut.bytes, signal: this.#cutOff.signal });
        else throw new PreconditionFailed(`${key} is already in S3`);
      } catch (error) {
        if (!(error instanceof PreconditionFailed)) throw error;
        if ((await storedSha256(this.#services.clients, bucket, key)) !== sha256) throw new ShippingError("BINLOG_SEGMENT_CONFLICT", `${key} is already in S3 with other bytes: this server's history has another writer`);
        this.#log.info({ key }, "adopted a segment uploaded before without its index entry");
      }
    }
    this.#orphan = { file: next.file, start: next.start, end: cut.end, sha256 };
    const segment: BinlogSegment = {
      server: chain.server,
      node: this.#services.node.id,
      seq,
      file: next.file,
      start: next.start,
      end: cut.end,
      bytes: cut.bytes.length,
      sha256,
      events: cut.events,
      firstEventAt: new Date(cut.firstTimestamp * 1000).toISOString(),
      lastEventAt: new Date(cut.lastTimestamp * 1000).toISOString(),
      closes: cut.closes,
      ...(Object.keys(cut.gtids).length ? { gtids: cut.gtids } : {}),
      key,
      shippedAt: this.#services.clock.now().toISOString(),
    };
    try {
      await this.#services.store.put(binlogKeys.entry(chain.server, seq), this.#services.signRecord("binlog-segment", segment), { ifNoneMatch: "*" });
    } catch (error) {
      if (!(error instanceof PreconditionFailed)) throw error;
      this.#chain = undefined;
      throw new ShippingError("BINLOG_INDEX_CONFLICT", `segment ${seq} of ${chain.server} was written by someone else: two shippers for one history; reading the index again`);
    }
    Object.assign(chain, { seq, file: next.file, end: cut.end, closes: cut.closes });
    this.#finished = undefined;
    this.#orphan = undefined;
    this.#lastShippedAt = segment.shippedAt;
    this.shipped.segments += 1;
    this.shipped.bytes += segment.bytes;
    this.#log.debug({ seq, file: next.file, start: next.start, end: cut.end, events: cut.events }, "shipped a binlog segment");
    await this.#writeHint(chain);
    for (const fn of this.#shippedListeners) fn();
  }

  /** A failed pass: the place is kept (nothing advanced), the next try waits longer, and an operator hears of it. */
  async #failed(error: unknown): Promise<number> {
    this.#failures += 1;
    const wait = Math.min(MAX_BACKOFF_MS, this.#options.intervalMs * 2 ** Math.min(this.#failures - 1, 10)) * (0.8 + Math.random() * 0.4);
    const where = this.#chain?.file ? `${this.#chain.file}:${this.#chain.end}` : "the start of the binary log";
    this.#log.warn({ err: error, failures: this.#failures, retryInMs: Math.round(wait) }, "binlog shipping failed; retrying");
    if (!this.#alerted.stalled) {
      this.#alerted.stalled = true;
      const code = error instanceof BinlogFormatError || error instanceof ShippingError ? error.code : "BINLOG_SHIPPING_STALLED";
      await this.#alert("warning", code, `binlog shipping stopped at ${where}: ${errorMessage(error)}; retrying with backoff, keeping its place: nothing is skipped`, { failures: this.#failures });
    }
    this.#failingSince ??= Date.now();
    // Where the archive ends is not known while S3 cannot be read (an agent that starts during an outage): behind since the failures began.
    const since = this.#pendingSince ?? (this.#chain === undefined ? this.#failingSince : undefined);
    const behindMs = since === undefined ? 0 : Date.now() - since;
    if (!this.#alerted.behind && behindMs > this.#options.behindAlertSeconds * 1000) {
      this.#alerted.behind = true;
      await this.#alert("critical", "BINLOG_SHIPPING_BEHIND", `binlog shipping is ${Math.round(behindMs / 1000)} s behind the server at ${where}: the newest transactions are on this node only`, { behindSeconds: Math.round(behindMs / 1000) });
    }
    return wait;
  }

  async #recovered(): Promise<void> {
    if (this.#failures === 0) return;
    const failures = this.#failures;
    this.#failures = 0;
    this.#failingSince = undefined;
    this.#log.info({ failures }, "binlog shipping goes on");
    if (this.#alerted.stalled || this.#alerted.behind) await this.#alert("warning", "BINLOG_SHIPPING_RESUMED", `binlog shipping goes on after ${failures} failed attempt(s)`, {});
    this.#alerted = { stalled: false, behind: false };
  }

  async #gap(chain: ChainEnd, what: string): Promise<void> {
    if (this.#gaps.has(what)) return;
    this.#gaps.add(what);
    await this.#alert("critical", "BINLOG_GAP", `${what}: the archive of ${chain.server} has a gap after ${chain.file ?? "its start"}:${chain.end}; take a snapshot to start a restorable history again`, { server: chain.server, file: chain.file, position: chain.end });
  }

  async #alert(severity: "warning" | "critical", code: string, message: string, details: Record<string, unknown>): Promise<void> {
    this.#log[severity === "critical" ? "error" : "warn"]({ code, ...details }, message);
    const node = this.#services.node;
    await this.#services.events
      .emit("alert", `binlog-${node.id}-${code.toLowerCase()}-${Date.now()}`, { node, severity, code, message: message.slice(0, 2000), details })
      .catch((error: unknown) => this.#log.warn({ err: error, code }, "could not publish a binlog shipping alert"));
  }

  /** The last sequence number shipped, kept on disk only to start the index listing near its end. */
  #hintPath(): string {
    return join(this.#services.settings.stateDir, "db-binlog-shipped.json");
  }

  async #readHint(server: string): Promise<number | undefined> {
    const hint = await readFile(this.#hintPath(), "utf8").then((t) => JSON.parse(t) as { server?: string; seq?: number }, () => undefined);
    return hint?.server === server && typeof hint.seq === "number" && hint.seq > 0 ? hint.seq : undefined;
  }

  async #writeHint(chain: ChainEnd): Promise<void> {
    await writeFile(this.#hintPath(), JSON.stringify({ server: chain.server, seq: chain.seq })).catch(() => undefined);
  }
}

/** The names of the files numbered between two files of one binary log (at most ten, then "…"). */
function filesBetween(first: string, last: string): string[] {
  const base = first.replace(/\.[0-9]+$/, "");
  const digits = /\.([0-9]+)$/.exec(first)?.[1]?.length ?? 6;
  const names: string[] = [];
  for (let n = binlogFileNumber(first) + 1; n < binlogFileNumber(last); n++) {
    if (names.length === 10) return [...names, "…"];
    names.push(`${base}.${String(n).padStart(digits, "0")}`);
  }
  return names;
}

async function fileSize(path: string): Promise<number | undefined> {
  const handle = await open(path, "r").catch(() => undefined);
  if (!handle) return undefined;
  try {
    return (await handle.stat()).size;
  } finally {
    await handle.close();
  }
}
