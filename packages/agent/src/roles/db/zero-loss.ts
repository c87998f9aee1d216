import { abortableDelay } from "@bosun/aws";
import { errorMessage, type Logger } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { ROTATE_EVENT } from "./binlog-format.ts";
import { ReplicationConnection, SEMI_SYNC_MAGIC } from "./replication-protocol.ts";

const MAX_BACKOFF_MS = 10_000;
const STATUS_EVERY_MS = 1_000;

/** What zero-loss mode needs of the server: its semi-synchronous settings and status, where its log ends, and how to reach it. */
export interface SemiSyncServer {
  enableSemiSync(timeoutMs: number): Promise<void>;
  /** Rpl_semi_sync_master_status: whether commits wait for an acknowledgement right now. */
  semiSyncActive(): Promise<boolean>;
  written(): Promise<{ file: string; position: number }>;
  replicationLogin(): Promise<{ socket?: string; host: string; port: number; user: string; password: string }>;
}

/** What it needs of the shipper: how far the archive in S3 goes, and a way to make it ship now. */
export interface ArchiveEnd {
  durableEnd(): { file: string; end: number; closes: boolean } | undefined;
  shipNow(): void;
  onShipped(fn: () => void): void;
}

/** Whether the archive holds everything up to `position` of `file`. */
export function covers(end: { file: string; end: number; closes: boolean } | undefined, file: string, position: number): boolean {
  if (!end) return false;
  const number = (f: string) => Number(/\.([0-9]+)$/.exec(f)?.[1] ?? Number.NaN);
  return number(end.file) > number(file) || (end.file === file && end.end >= position);
}

/**
 * Zero-loss mode: the agent registers with its own server as a semi-synchronous replica, and
 * acknowledges a transaction only once the shipper has the segment holding it durable in S3.
 * With the server waiting AFTER_SYNC, a commit returns to the application only after that
 * acknowledgement: whatever the application was told is committed is in S3. The events that
 * come over the connection are not kept (the shipper reads the server's files); only their
 * positions matter. When S3 (or the agent) is slower than db.shipping.zeroLoss.timeoutMs, the
 * server stops waiting and commits go on asynchronously; the agent says so (ZERO_LOSS_SUSPENDED)
 * and again when the server waits once more (ZERO_LOSS_RESUMED).
 */
export class ZeroLossAcker {
  readonly #services: RoleServices;
  readonly #server: SemiSyncServer;
  readonly #archive: ArchiveEnd;
  readonly #options: { timeoutMs: number; serverId: number };
  readonly #log: Logger;
  readonly #stop = new AbortController();
  #loops: Promise<unknown> | undefined;
  #connection: ReplicationConnection | undefined;
  /** The furthest position the server asked to have acknowledged, and not yet acknowledged. */
  #pending: { file: string; position: number } | undefined;
  #file = "";
  /** The end of the last event the replication stream brought: how far the server has written its binary log. */
  #seen: { file: string; position: number } | undefined;

  constructor(deps: { services: RoleServices; server: SemiSyncServer; archive: ArchiveEnd }, options: { timeoutMs: number; serverId: number }) {
    this.#services = deps.services;
    this.#server = deps.server;
    this.#archive = deps.archive;
    this.#options = options;
    this.#log = deps.services.logger.child({ role: "db", part: "zero-loss" });
    this.#archive.onShipped(() => this.#acknowledge());
  }

  /**
   * How far the server has written, while the replication connection is up: the shipper ships
   * that far without asking the server (SHOW MASTER STATUS waits behind commits that wait for an
   * acknowledgement, which waits for the shipper).
   */
  written(): { file: string; position: number } | undefined {
    return this.#connection ? this.#seen : undefined;
  }

  start(): void {
    this.#loops ??= Promise.all([this.#follow(), this.#watchStatus()]);
  }

  async close(): Promise<void> {
    this.#stop.abort();
    this.#connection?.close();
    await this.#loops;
  }

  /** Keeps a replication connection open (reconnecting with backoff), reading the events' positions as they come. */
  async #follow(): Promise<void> {
    let failures = 0;
    while (!this.#stop.signal.aborted) {
      try {
        await this.#server.enableSemiSync(this.#options.timeoutMs);
        const from = await this.#server.written();
        const connection = await ReplicationConnection.open(await this.#server.replicationLogin(), this.#stop.signal);
        this.#connection = connection;
        await connection.execute("SET @master_binlog_checksum = @@global.binlog_checksum");
        await connection.execute("SET @mariadb_slave_capability = 4");
        await connection.execute("SET @rpl_semi_sync_slave = 1");
        connection.startDump(this.#options.serverId, from.file, from.position);
        this.#file = from.file;
        this.#seen = from;
        this.#log.info({ from }, "zero-loss mode: acknowledging commits once they are in S3");
        failures = 0;
        for (;;) this.#event(await connection.nextPacket());
      } catch (error) {
        this.#connection?.close();
        this.#connection = undefined;
        if (this.#stop.signal.aborted) return;
        failures += 1;
        this.#log.warn({ err: error, failures }, "zero-loss mode: the replication connection failed; connecting again");
        await abortableDelay(Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(failures, 6)), this.#stop.signal);
      }
    }
  }

  /** One packet of the dump: the OK byte, then (semi-sync) the magic and whether an acknowledgement is asked for, then the event. */
  #event(packet: Buffer): void {
    const semi = packet[1] === SEMI_SYNC_MAGIC;
    const wantsAck = semi && packet[2] === 1;
    const event = packet.subarray(semi ? 3 : 1);
    if (event.length < 19) return;
    const type = event[4];
    const next = event.readUInt32LE(13);
    if (type === ROTATE_EVENT) {
      // The body: the position in the new file (8 bytes), then its name (and a checksum, when the log has them).
      const name = /^[A-Za-z0-9_.-]*?\.[0-9]{6,}/.exec(event.subarray(27).toString("latin1"))?.[0];
      if (name) {
        this.#file = name;
        this.#seen = { file: name, position: Number(event.readBigUInt64LE(19)) };
      }
      return;
    }
    // Events the server made up for the stream (its format description) carry no position.
    if (next > 0) this.#seen = { file: this.#file, position: next };
    if (!wantsAck || next === 0) return;
    this.#pending = { file: this.#file, position: next };
    this.#archive.shipNow();
    this.#acknowledge();
  }

  /** Acknowledges the pending position once the archive holds it: the server then returns every commit up to it. */
  #acknowledge(): void {
    const pending = this.#pending;
    if (!pending || !this.#connection || !covers(this.#archive.durableEnd(), pending.file, pending.position)) return;
    this.#connection.acknowledge(pending.file, pending.position);
    this.#pending = undefined;
  }

  /** Says when the server stops waiting for acknowledgements (S3 too slow) and when it waits again. */
  async #watchStatus(): Promise<void> {
    let active: boolean | undefined;
    let suspended = false;
    while (!this.#stop.signal.aborted) {
      const now = await this.#server.semiSyncActive().catch(() => undefined);
      // Suspended when the server stops waiting; resumed only after a suspension was said.
      if (now !== undefined && active !== undefined && now !== active && (!now || suspended)) {
        suspended = !now;
        const code = now ? "ZERO_LOSS_RESUMED" : "ZERO_LOSS_SUSPENDED";
        const message = now
          ? "zero-loss mode is back: commits wait again until they are in S3"
          : `zero-loss mode is suspended: the server stopped waiting after ${this.#options.timeoutMs} ms without an acknowledgement, so commits return before they are in S3 until shipping catches up`;
        this.#log[now ? "warn" : "error"]({ code }, message);
        await this.#services.events
          .emit("alert", `zero-loss-${this.#services.node.id}-${code.toLowerCase()}-${Date.now()}`, { node: this.#services.node, severity: now ? "warning" : "critical", code, message })
          .catch((error: unknown) => this.#log.warn({ err: error }, `could not publish ${code}: ${errorMessage(error)}`));
      }
      if (now !== undefined) active = now;
      await abortableDelay(STATUS_EVERY_MS, this.#stop.signal);
    }
  }
}
