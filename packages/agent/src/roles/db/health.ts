import { abortableDelay } from "@bosun/aws";
import type { DbSettings, Logger } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import type { DatabaseEngine, ServerInfo } from "./engine.ts";

type Health = DbSettings["health"];
type Replication = NonNullable<ServerInfo["replication"]>;

/** What a look at the replica found: healthy, lagging past the threshold, or a thread stopped. */
type Verdict = { code: "REPLICATION_HEALTHY" } | { code: "REPLICATION_LAGGING"; lagSeconds: number } | { code: "REPLICATION_STOPPED"; io: boolean; sql: boolean };

/** A replica's state as an operator would judge it; a primary has none. A SQL thread a backup paused is not a failure. */
export function judge(replication: Replication | undefined, health: Health): Verdict | undefined {
  if (!replication) return undefined;
  if (!replication.io || (!replication.sql && !replication.pausedForBackup)) return { code: "REPLICATION_STOPPED", io: replication.io, sql: replication.sql };
  if (replication.lagSeconds !== null && replication.lagSeconds > health.lagAlertSeconds) return { code: "REPLICATION_LAGGING", lagSeconds: replication.lagSeconds };
  return { code: "REPLICATION_HEALTHY" };
}

/**
 * Looks at this server's replication every few seconds (db.health.intervalSeconds) and raises an
 * alert event when it changes for the worse (a thread stopped, lag past db.health.lagAlertSeconds)
 * and when it is healthy again: one event per change, not one per look. Heartbeats carry the
 * figures themselves; this is what reaches a person between them.
 */
export class ReplicationWatch {
  readonly #services: RoleServices;
  readonly #engine: DatabaseEngine;
  readonly #health: Health;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #last: Verdict["code"] | undefined;

  constructor(deps: { services: RoleServices; engine: DatabaseEngine }, health: Health) {
    this.#services = deps.services;
    this.#engine = deps.engine;
    this.#health = health;
    this.#log = deps.services.logger.child({ role: "db", part: "replication-watch" });
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async close(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      await this.check().catch((error: unknown) => this.#log.warn({ err: error }, "could not look at the server's replication"));
      await abortableDelay(this.#health.intervalSeconds * 1000, this.#stop.signal);
    }
  }

  /** One look; an alert when the verdict changed (the first look alerts only if it is bad). */
  async check(): Promise<void> {
    const verdict = judge((await this.#engine.describe()).replication, this.#health);
    const code = verdict?.code;
    if (code === this.#last || (this.#last === undefined && (code === undefined || code === "REPLICATION_HEALTHY"))) {
      this.#last = code;
      return;
    }
    this.#last = code;
    if (!verdict) return;
    const node = this.#services.node;
    const message =
      verdict.code === "REPLICATION_STOPPED"
        ? `replication on ${node.id} stopped: IO thread ${verdict.io ? "running" : "stopped"}, SQL thread ${verdict.sql ? "running" : "stopped"}`
        : verdict.code === "REPLICATION_LAGGING"
          ? `replication on ${node.id} is ${verdict.lagSeconds} s behind its primary (alert above ${this.#health.lagAlertSeconds} s)`
          : `replication on ${node.id} is healthy again`;
    const severity = verdict.code === "REPLICATION_STOPPED" ? "critical" : "warning";
    this.#log[severity === "critical" ? "error" : "warn"]({ code: verdict.code }, message);
    await this.#services.events
      .emit("alert", `replication-${node.id}-${verdict.code.toLowerCase()}-${Date.now()}`, { node, severity, code: verdict.code, message, details: { ...verdict } })
      .catch((error: unknown) => this.#log.warn({ err: error }, "could not publish a replication alert"));
  }
}
