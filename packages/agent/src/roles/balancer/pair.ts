import { randomUUID } from "node:crypto";
import { claimElasticIp, describeElasticIp, releaseElasticIp, type AwsClients, type ElasticIpAssociation } from "@bosun/aws";
import { errorMessage, type EventPayload, type Logger, type NodeRef, type PairReport, type PairRole, type PairSettings } from "@bosun/core";
import type { EventSink } from "../../pipeline.ts";

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
 * One balancer of a pair. Every `intervalMs` it reads where the Elastic IP points: holding it, it
 * is active; otherwise it checks the other balancer's HAProxy over HTTP and takes the address over
 * only after `failures` consecutive failed checks, and only while its own HAProxy answers. The
 * takeover is a compare-and-swap on the address's association (claimElasticIp), so two balancers
 * never both hold it. A balancer that comes back finds the address held and stays standby, unless
 * `failback` is set on it; a clean stop hands the address back so the standby takes it at once.
 */
export class BalancerPair {
  readonly #clients: AwsClients;
  readonly #log: Logger;
  readonly #events: EventSink;
  readonly #settings: PairSettings;
  readonly #node: NodeRef;
  readonly #self: string;
  #role: PairRole = "starting";
  #address: ElasticIpAssociation | undefined;
  #failed = 0;
  #firstFailedAt: number | undefined;
  #selfPassed = 0;
  #timer: NodeJS.Timeout | undefined;
  #tick: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(deps: { clients: AwsClients; logger: Logger; events: EventSink }, options: { settings: PairSettings; node: NodeRef; self: string }) {
    this.#clients = deps.clients;
    this.#log = deps.logger.child({ pair: options.settings.entry.allocationId });
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

  /** One round: where the address points, then the peer's check, then a takeover if called for. */
  async tick(): Promise<void> {
    const { allocationId } = this.#settings.entry;
    const address = await describeElasticIp(this.#clients, allocationId);
    this.#address = address;
    if (address.instanceId === this.#node.id) {
      if (this.#role !== "active") this.#log.info({ publicIp: address.publicIp }, "holding the entry point: active");
      this.#role = "active";
      this.#failed = 0;
      return;
    }
    if (this.#role === "active") this.#log.warn({ holder: address.instanceId ?? "none" }, "the entry point moved away from this balancer: standby");
    if (this.#role !== "standby") this.#log.info({ holder: address.instanceId ?? "none" }, "another balancer holds the entry point, or nobody: standby");
    this.#role = "standby";
    if (!address.instanceId) return this.#takeOver("unheld", address);
    const peerOk = await answers(this.#settings.peer, this.#settings.timeoutMs);
    if (peerOk) {
      if (this.#failed > 0) this.#log.info({ failedChecks: this.#failed }, "the other balancer answers again");
      this.#failed = 0;
      this.#firstFailedAt = undefined;
      if (this.#settings.failback) {
        this.#selfPassed = (await answers(this.#self, this.#settings.timeoutMs)) ? this.#selfPassed + 1 : 0;
        if (this.#selfPassed >= this.#settings.failures) await this.#takeOver("failback", address);
      }
      return;
    }
    this.#failed += 1;
    this.#firstFailedAt ??= Date.now();
    this.#log.warn({ failedChecks: this.#failed, threshold: this.#settings.failures, holder: address.instanceId }, "the other balancer failed a check");
    if (this.#failed >= this.#settings.failures) await this.#takeOver("peer-failed", address);
  }

  /** Takes the address, if this balancer's own HAProxy answers: a standby that cannot serve must not take it. */
  async #takeOver(reason: TakeoverReason, address: ElasticIpAssociation): Promise<void> {
    if (!(await answers(this.#self, this.#settings.timeoutMs))) {
      this.#log.warn({ reason, self: this.#self }, "not taking the entry point: this balancer's own HAProxy does not answer");
      return;
    }
    const won = await claimElasticIp(this.#clients, { allocationId: address.allocationId, instanceId: this.#node.id, from: address.associationId });
    if (!won) {
      this.#log.warn({ reason }, "the entry point moved while this balancer took it over: someone else holds it; standby");
      return;
    }
    const tookMs = this.#firstFailedAt === undefined ? undefined : Date.now() - this.#firstFailedAt;
    const event: EventPayload<"lb-takeover"> = {
      node: this.#node,
      entry: this.#entry(),
      ...(address.instanceId ? { previous: address.instanceId } : {}),
      reason,
      failedChecks: this.#failed,
      threshold: this.#settings.failures,
      intervalMs: this.#settings.intervalMs,
      ...(tookMs === undefined ? {} : { tookMs }),
    };
    this.#role = "active";
    this.#address = { ...address, instanceId: this.#node.id };
    this.#failed = 0;
    this.#firstFailedAt = undefined;
    this.#selfPassed = 0;
    this.#log.info(event, "took over the entry point: active");
    await this.#events.emit("lb-takeover", `lb-takeover-${this.#node.id}-${randomUUID()}`, event).catch((error: unknown) => this.#log.warn({ err: error }, "could not publish the takeover"));
  }

  report(): PairReport {
    return {
      role: this.#role,
      entry: this.#entry(),
      ...(this.#address?.instanceId ? { holder: this.#address.instanceId } : {}),
      peer: this.#settings.peer,
      failedChecks: this.#failed,
      threshold: this.#settings.failures,
      intervalMs: this.#settings.intervalMs,
    };
  }

  /** Stops checking; an active balancer hands the address back (its HAProxy stops with the agent), so the standby takes it at its next check. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#tick;
    if (this.#role !== "active") return;
    try {
      if (await releaseElasticIp(this.#clients, { allocationId: this.#settings.entry.allocationId, instanceId: this.#node.id })) this.#log.info("handed the entry point back on stopping");
    } catch (error) {
      this.#log.warn({ err: errorMessage(error) }, "could not hand the entry point back; the standby takes it after its failed checks");
    }
  }

  #entry(): string {
    const ip = this.#address?.publicIp;
    return `eip ${this.#settings.entry.allocationId}${ip ? ` (${ip})` : ""}`;
  }
}
