import { randomUUID } from "node:crypto";
import { errorMessage, type EventPayload, type Logger, type NodeRef, type PairReport, type PairRole, type PairSettings } from "@bosun/core";
import type { EventSink } from "../../pipeline.ts";
import type { EntryPoint, Holding } from "./entry.ts";

type TakeoverReason = EventPayload<"lb-takeover">["reason"];

/** Whether an HTTP check answers 200 within the timeout. */
async function answers(url: string, timeoutMs: number): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { connection: "close" } });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

/**
 * One balancer of a pair. Every `intervalMs` it reads who holds the entry point (an Elastic IP's
 * association, or the lease behind a Route 53 record). Holding it, it is active: it keeps it
 * (renews the lease) and checks its own HAProxy, giving the entry point up after `failures`
 * failed checks in a row. Otherwise it is standby: it checks the other balancer's HAProxy over
 * HTTP and takes the entry point over only after `failures` consecutive failed checks, and only
 * while its own HAProxy answers; every takeover is a compare-and-swap (entry.ts), so two
 * balancers never both hold it. A balancer that comes back finds it held and stays standby,
 * unless `failback` is set on it; a clean stop gives it up so the standby takes it at once.
 */
export class BalancerPair {
  readonly #entry: EntryPoint;
  readonly #log: Logger;
  readonly #events: EventSink;
  readonly #settings: PairSettings;
  readonly #node: NodeRef;
  readonly #self: string;
  #role: PairRole = "starting";
  #seen: Holding | undefined;
  #failed = 0;
  #firstFailedAt: number | undefined;
  #selfPassed = 0;
  #selfFailed = 0;
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(deps: { entry: EntryPoint; logger: Logger; events: EventSink }, options: { settings: PairSettings; node: NodeRef; self: string }) {
    this.#entry = deps.entry;
    this.#log = deps.logger.child({ entry: options.settings.entry.kind });
    this.#events = deps.events;
    this.#settings = options.settings;
    this.#node = options.node;
    this.#self = options.self;
  }

  get role(): PairRole {
    return this.#role;
  }

  start(): void {
    const loop = () => {
      if (this.#closed) return;
      const began = Date.now();
      this.#tick = this.tick()
        .catch((error: unknown) => this.#log.warn({ err: error }, "could not read or take the entry point; trying again"))
        .finally(() => {
          if (!this.#closed) this.#timer = setTimeout(loop, Math.max(0, this.#settings.intervalMs - (Date.now() - began)));
        });
    };
    loop();
  }

  /** One round: who holds the entry point, then the checks, then a takeover or a hand-over if called for. */
  async tick(): Promise<void> {
    const seen = await this.#entry.read();
    this.#seen = seen;
    if (seen.holder === this.#node.id && (await this.#entry.keep(seen))) return this.#active(seen);
    if (this.#role === "active") this.#log.warn({ holder: seen.holder ?? "none" }, "the entry point moved away from this balancer: standby");
    if (this.#role !== "standby") this.#log.info({ holder: seen.holder ?? "none" }, "another balancer holds the entry point, or nobody: standby");
    this.#role = "standby";
    this.#selfFailed = 0;
    if (!seen.holder) return this.#takeOver("unheld", seen);
    if (seen.holder === this.#node.id) return; // a holding it could not keep (its lease was taken): the next read says who has it
    const peerOk = await answers(this.#settings.peer, this.#settings.timeoutMs);
    if (peerOk) {
      if (this.#failed > 0) this.#log.info({ failedChecks: this.#failed }, "the other balancer answers again");
      this.#failed = 0;
      this.#firstFailedAt = undefined;
      if (this.#settings.failback) {
        this.#selfPassed = (await answers(this.#self, this.#settings.timeoutMs)) ? this.#selfPassed + 1 : 0;
        if (this.#selfPassed >= this.#settings.failures) await this.#takeOver("failback", seen);
      }
      return;
    }
    this.#failed += 1;
    this.#firstFailedAt ??= Date.now();
    this.#log.warn({ failedChecks: this.#failed, threshold: this.#settings.failures, holder: seen.holder }, "the other balancer failed a check");
    if (this.#failed >= this.#settings.failures) await this.#takeOver("peer-failed", seen);
  }

  /** Holding it: its own HAProxy must answer, or after `failures` failed checks it hands the entry point to the standby. */
  async #active(seen: Holding): Promise<void> {
    if (this.#role !== "active") this.#log.info({ entry: seen.describe }, "holding the entry point: active");
    this.#role = "active";
    this.#failed = 0;
    this.#selfFailed = (await answers(this.#self, this.#settings.timeoutMs)) ? 0 : this.#selfFailed + 1;
    if (this.#selfFailed < this.#settings.failures) return;
    this.#log.error({ failedChecks: this.#selfFailed, self: this.#self }, "this balancer's own HAProxy failed its checks: giving the entry point up");
    await this.#entry.release();
    this.#role = "standby";
    this.#selfFailed = 0;
  }

  /** Takes the entry point, if this balancer's own HAProxy answers: a standby that cannot serve must not take it. */
  async #takeOver(reason: TakeoverReason, seen: Holding): Promise<void> {
    if (!(await answers(this.#self, this.#settings.timeoutMs))) {
      this.#log.warn({ reason, self: this.#self }, "not taking the entry point: this balancer's own HAProxy does not answer");
      return;
    }
    if (!(await this.#entry.claim(seen))) {
      this.#log.warn({ reason, holder: seen.holder ?? "none" }, "the entry point is still held, or moved while this balancer took it over: standby");
      return;
    }
    const tookMs = this.#firstFailedAt === undefined ? undefined : Date.now() - this.#firstFailedAt;
    const now = await this.#entry.read().catch(() => seen);
    this.#seen = now;
    const event: EventPayload<"lb-takeover"> = {
      node: this.#node,
      entry: now.describe,
      ...(seen.holder ? { previous: seen.holder } : {}),
      reason,
      failedChecks: this.#failed,
      threshold: this.#settings.failures,
      intervalMs: this.#settings.intervalMs,
      ...(tookMs === undefined ? {} : { tookMs }),
    };
    this.#role = "active";
    this.#failed = 0;
    this.#firstFailedAt = undefined;
    this.#selfPassed = 0;
    this.#log.info(event, "took over the entry point: active");
    await this.#events.emit("lb-takeover", `lb-takeover-${this.#node.id}-${randomUUID()}`, event).catch((error: unknown) => this.#log.warn({ err: error }, "could not publish the takeover"));
  }

  report(): PairReport {
    return {
      role: this.#role,
      entry: this.#seen?.describe ?? this.#settings.entry.kind,
      ...(this.#seen?.holder ? { holder: this.#seen.holder } : {}),
      peer: this.#settings.peer,
      failedChecks: this.#failed,
      threshold: this.#settings.failures,
      intervalMs: this.#settings.intervalMs,
    };
  }

  /** Stops checking; an active balancer gives the entry point up (its HAProxy stops with the agent), so the standby takes it at its next check. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#tick;
    if (this.#role !== "active") return;
    try {
      if (await this.#entry.release()) this.#log.info("handed the entry point back on stopping");
    } catch (error) {
      this.#log.warn({ err: errorMessage(error) }, "could not hand the entry point back; the standby takes it after its failed checks");
    }
  }
}
