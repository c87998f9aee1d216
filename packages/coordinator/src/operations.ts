import cron, { type ScheduledTask } from "node-cron";
import { z } from "zod";
import { stateKeys, type EventVerifier, type StateStore } from "@bosun/aws";
import { ConfigError, errorMessage, type Clock, type Envelope, type EventPayload, type Logger, type Settings } from "@bosun/core";
import type { NodeRecord } from "./fleet.ts";
import { chooseDbNode } from "./procedures/backups.ts";

const recordSchema = z.object({
  name: z.enum(["backup", "drill"]),
  cron: z.string(),
  /** When the schedule is next due; a leader that finds it long past knows a run was missed. */
  nextRunAt: z.iso.datetime().optional(),
  lastFiredAt: z.iso.datetime().optional(),
  commandId: z.string().optional(),
  node: z.string().optional(),
  outcome: z.enum(["pending", "done", "failed", "no-node", "no-answer"]).optional(),
  detail: z.string().optional(),
});
export type ScheduleRecord = z.infer<typeof recordSchema>;

interface Schedule {
  name: "backup" | "drill";
  cron: string;
  payload: Record<string, unknown>;
}

/** A run that has not answered in this long is reported (once). */
const NO_ANSWER_MS = 6 * 3600_000;
/** How late a due run may be before it counts as missed. */
const MISSED_AFTER_MS = 60_000;

export interface OperationsDeps {
  store: StateStore;
  logger: Logger;
  clock: Clock;
  verifier: () => EventVerifier;
  nodes: () => NodeRecord[];
  /** Signs and publishes a command to one node; returns its id. */
  send(type: "backup-now" | "drill", node: string, payload: Record<string, unknown>): Promise<string>;
  alert(payload: Omit<EventPayload<"alert">, "node">): Promise<void>;
}

/**
 * The coordinator's scheduled backups and drills (settings.backups): each due run sends the
 * command to the node chooseDbNode picks, and its outcome is followed through the node's result
 * event (or its result in S3). Operators hear, through `alert` events, of a run that failed, found
 * no db node, did not answer, or was missed because no coordinator was leading when it was due
 * (that one is run at once). What each schedule did last is kept in S3, so a new leader knows.
 */
export class ScheduledOperations {
  readonly #deps: OperationsDeps;
  readonly #schedules: Schedule[];
  #tasks: ScheduledTask[] = [];
  #records = new Map<string, ScheduleRecord>();
  #queue: Promise<void> = Promise.resolve();

  constructor(deps: OperationsDeps, backups: Settings["backups"]) {
    this.#deps = deps;
    this.#schedules = [
      ...(backups.schedule ? [{ name: "backup" as const, cron: backups.schedule, payload: { reason: "scheduled" } }] : []),
      { name: "drill" as const, cron: backups.drillSchedule, payload: {} },
    ];
    for (const s of this.#schedules) {
      if (!cron.validate(s.cron)) throw new ConfigError(`backups.${s.name === "backup" ? "schedule" : "drillSchedule"} is not a cron expression: ${JSON.stringify(s.cron)}`);
    }
  }

  get count(): number {
    return this.#schedules.length;
  }

  /** Starts the schedules; first reports (and runs) any that came due while no coordinator led. */
  async start(): Promise<void> {
    for (const schedule of this.#schedules) {
      const task = cron.createTask(schedule.cron, () => this.#serial(() => this.#fire(schedule, "due")), { name: `bosun-${schedule.name}`, noOverlap: true });
      this.#tasks.push(task);
      // Started first: a task tells its next run only once it runs.
      await task.start();
      const record = await this.#read(schedule.name);
      const now = this.#deps.clock.now().getTime();
      const hasDb = this.#deps.nodes().some((n) => n.roles.includes("db"));
      if (hasDb && record?.cron === schedule.cron && record.nextRunAt && Date.parse(record.nextRunAt) < now - MISSED_AFTER_MS) {
        await this.#alert("warning", `SCHEDULED_${schedule.name.toUpperCase()}_MISSED`, `the ${schedule.name} due at ${record.nextRunAt} did not run: no coordinator was leading then; running it now`, { due: record.nextRunAt });
        await this.#serial(() => this.#fire(schedule, "missed"));
      } else {
        await this.#write({ ...(record?.cron === schedule.cron ? record : {}), name: schedule.name, cron: schedule.cron, ...next(task) });
      }
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.#tasks.map((task) => task.destroy()));
    this.#tasks = [];
    await this.#queue;
  }

  /** A result event from a node: the outcome of a scheduled run, if it is one. */
  onEvent(envelope: Envelope): void {
    if (envelope.type !== "done" && envelope.type !== "failed") return;
    for (const record of this.#records.values()) {
      if (record.commandId !== envelope.correlationId || record.outcome !== "pending") continue;
      void this.#serial(() => this.#settled(record.name, envelope));
    }
  }

  /** Every minute or so: pending runs are looked up in S3 (an event can be lost), and long silences reported. */
  async check(): Promise<void> {
    await this.#serial(async () => {
      for (const record of this.#records.values()) {
        if (record.outcome !== "pending" || !record.commandId || !record.node) continue;
        const raw = await this.#deps.store.get(stateKeys.result(record.commandId, record.node));
        if (raw !== undefined) {
          const parsed = await this.#deps.verifier().verify(JSON.stringify(raw));
          if (parsed.ok) {
            await this.#settled(record.name, parsed.value.envelope);
            continue;
          }
        }
        if (record.lastFiredAt && this.#deps.clock.now().getTime() - Date.parse(record.lastFiredAt) > NO_ANSWER_MS) {
          await this.#write({ ...record, outcome: "no-answer" });
          await this.#alert("critical", `SCHEDULED_${record.name.toUpperCase()}_NO_ANSWER`, `the scheduled ${record.name} sent to ${record.node} at ${record.lastFiredAt} has not answered`, { commandId: record.commandId, node: record.node });
        }
      }
    });
  }

  /** Runs one step at a time: a due run, an outcome and a check never interleave. */
  #serial(step: () => Promise<void>): Promise<void> {
    this.#queue = this.#queue.then(step).catch((error: unknown) => this.#deps.logger.error({ err: error }, "scheduled operation step failed"));
    return this.#queue;
  }

  async #fire(schedule: Schedule, why: "due" | "missed"): Promise<void> {
    const task = this.#tasks.find((t) => t.name === `bosun-${schedule.name}`);
    const previous = this.#records.get(schedule.name);
    if (previous?.outcome === "pending") {
      await this.#alert("critical", `SCHEDULED_${schedule.name.toUpperCase()}_NO_ANSWER`, `the scheduled ${schedule.name} sent to ${previous.node} at ${previous.lastFiredAt} had not answered when the next one came due`, {
        commandId: previous.commandId,
        node: previous.node,
      });
    }
    const firedAt = this.#deps.clock.now().toISOString();
    const nodes = this.#deps.nodes();
    if (!nodes.some((n) => n.roles.includes("db"))) {
      // A fleet without databases (web only) has nothing to back up: not worth an alert.
      this.#deps.logger.info({ schedule: schedule.name }, `no db node in the fleet: the scheduled ${schedule.name} has nothing to do`);
      await this.#write({ name: schedule.name, cron: schedule.cron, lastFiredAt: firedAt, ...(task ? next(task) : {}) });
      return;
    }
    const node = chooseDbNode(nodes);
    if (!node) {
      await this.#write({ name: schedule.name, cron: schedule.cron, lastFiredAt: firedAt, outcome: "no-node", ...(task ? next(task) : {}) });
      await this.#alert("critical", `SCHEDULED_${schedule.name.toUpperCase()}_NO_NODE`, `the scheduled ${schedule.name} could not run: no db node is up`, {});
      return;
    }
    const commandId = await this.#deps.send(schedule.name === "backup" ? "backup-now" : "drill", node.id, schedule.payload);
    this.#deps.logger.info({ schedule: schedule.name, node: node.id, commandId, why }, `sent the scheduled ${schedule.name}`);
    await this.#write({ name: schedule.name, cron: schedule.cron, lastFiredAt: firedAt, commandId, node: node.id, outcome: "pending", ...(task ? next(task) : {}) });
  }

  async #settled(name: string, envelope: Envelope): Promise<void> {
    const record = this.#records.get(name);
    if (!record || record.commandId !== envelope.correlationId || record.outcome !== "pending") return;
    if (envelope.type === "done") {
      await this.#write({ ...record, outcome: "done" });
      return;
    }
    const failed = envelope.payload as EventPayload<"failed">;
    await this.#write({ ...record, outcome: "failed", detail: failed.error });
    await this.#alert("critical", `SCHEDULED_${name.toUpperCase()}_FAILED`, `the scheduled ${name} on ${record.node} failed: ${failed.error}`, { commandId: record.commandId, node: record.node, code: failed.code });
  }

  async #read(name: string): Promise<ScheduleRecord | undefined> {
    const record = await this.#deps.store.getParsed(stateKeys.schedule(name), recordSchema).catch(() => undefined);
    if (record) this.#records.set(name, record);
    return record;
  }

  async #write(record: ScheduleRecord): Promise<void> {
    this.#records.set(record.name, record);
    await this.#deps.store.put(stateKeys.schedule(record.name), record).catch((error: unknown) => this.#deps.logger.warn({ err: error, schedule: record.name }, "could not record the schedule's state"));
  }

  async #alert(severity: "warning" | "critical", code: string, message: string, details: Record<string, unknown>): Promise<void> {
    this.#deps.logger.warn({ code, details }, message);
    await this.#deps.alert({ severity, code, message, details }).catch((error: unknown) => this.#deps.logger.error({ err: error, code }, `could not publish the alert: ${errorMessage(error)}`));
  }
}

function next(task: ScheduledTask): { nextRunAt?: string } {
  const at = task.getNextRun();
  return at ? { nextRunAt: at.toISOString() } : {};
}
