import type { Readable } from "node:stream";
import type { Coordinates } from "@bosun/core";

/** The server as the engine finds it. */
export interface ServerInfo {
  id: number;
  /** Bosun's name for this server's history (MariaDB has no server UUID of its own). */
  uuid: string;
  version: string;
  role: "primary" | "replica";
  /** A replica's threads and lag; pausedForBackup: a backup stopped its SQL thread on purpose. */
  replication?: { io: boolean; sql: boolean; lagSeconds: number | null; pausedForBackup?: boolean };
}

/** A snapshot being taken: its bytes as the database produces them, and how the producer ended. */
export interface SnapshotRun {
  stream: Readable;
  done: Promise<void>;
  /** The coordinates the producer reported (a dump's header, mariabackup's log); read once `done` resolved. */
  coordinates(): Coordinates | undefined;
}

/** The server's binary log as it stands: its files, oldest first, and how far the server has written. */
export interface BinaryLogs {
  /** Whether the server replicates from another (its binary log then repeats that one's history). */
  replica: boolean;
  files: { name: string; path: string }[];
  /** The end of what the server has written whole, in its newest file (SHOW MASTER STATUS). */
  written: { file: string; position: number };
}

/** A throwaway server for a drill: restore into it, read its checksums, then remove it. */
export interface ScratchServer {
  loadLogical(stream: Readable, signal: AbortSignal): Promise<void>;
  checksums(): Promise<Record<string, string | null>>;
  close(): Promise<void>;
}

/**
 * What the db role needs of a database engine. MariaDB/MySQL is the first; PostgreSQL, whose
 * server archives its write-ahead log by itself, is to fit the same interface: a snapshot with
 * coordinates, checksums to prove a restore, restoring from a stream, a scratch server to drill.
 */
export interface DatabaseEngine {
  describe(): Promise<ServerInfo>;
  /** This server's name in the archive: Bosun's uuid for it, and the epoch of its history (raised by every restore). */
  archiveName(): Promise<{ uuid: string; epoch: number }>;
  /** The binary log's files on this node, or undefined when binary logging is off. */
  /**
   * `written`: how far the server has written, when the caller knows it already (zero-loss mode
   * reads it off its replication stream: SHOW MASTER STATUS waits while commits wait for an
   * acknowledgement, and the acknowledgement waits for the shipper).
   */
  binaryLogs(written?: { file: string; position: number }): Promise<BinaryLogs | undefined>;
  /** Stops applying replicated changes so the data stays put; returns where in the primary's history it stopped. */
  pauseReplica(): Promise<Coordinates>;
  resumeReplica(): Promise<void>;
  /** Per-table checksums of the user's tables, by "schema.table". */
  checksums(): Promise<Record<string, string | null>>;
  /** Bytes the user's tables take on disk: an estimate of a snapshot's size, for progress. */
  dataSize(): Promise<number>;
  /** Where this engine stages files (restores, drills): created on first use, the agent's alone. */
  scratchDir(): Promise<string>;
  snapshot(kind: "logical" | "physical", options: { signal: AbortSignal; scratchDir: string }): Promise<SnapshotRun>;
  /** A brief consistent lock (an EBS snapshot is taken under it); returns the coordinates it holds at. */
  lock(): Promise<{ coordinates: Coordinates; unlock(): Promise<void> }>;
  restoreLogical(stream: Readable, options: { signal: AbortSignal }): Promise<void>;
  /**
   * Applies binary-log files (a primary's, as shipped) to this server: from `start` in the first
   * file to just before `stop` in the last (to the end when absent). They go into this server's
   * own binary log with their GTIDs, so a promoted server goes on numbering after them.
   */
  replay(files: readonly string[], options: { start: number; stop?: number; signal: AbortSignal }): Promise<void>;
  /** Replaces the data directory with an extracted, prepared physical backup; on any failure the old one is put back. */
  restorePhysical(stream: Readable, options: { signal: AbortSignal; scratchDir: string; onStage?: (stage: string) => void }): Promise<void>;
  /**
   * After a restore: forget any old replication, record where the data stands, make sure the
   * server's id is not the id of the server the snapshot came from, and optionally replicate from
   * a primary. Returns the server's id.
   */
  settle(coordinates: Coordinates, replicaOf: { host: string; port: number } | undefined, options: { sourceServerId: number }): Promise<number>;
  /**
   * At start: undoes a restore the agent died in the middle of (puts the replaced data directory
   * back, or stops a server whose load was cut off). Says what it did, or undefined.
   */
  recover(): Promise<string | undefined>;
  /** Stops the server (the node's stop command): a half-restored server must not serve. */
  stop(): Promise<void>;
  /**
   * Before a restore: starts the server again when an earlier logical load failed part-way and
   * stopped it, so the new restore can replace its half-restored data.
   */
  startIfHalfRestored(): Promise<void>;
  scratchServer(kind: "logical" | "physical", options: { dir: string; signal: AbortSignal; physical?: Readable }): Promise<ScratchServer>;
}
