import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import cron, { type ScheduledTask } from "node-cron";
import {
  BOSUN_VERSION,
  Lifecycle,
  createMessage,
  parseTarget,
  type Clock,
  type EventPayload,
  type EventType,
  type Logger,
  type ServiceState,
  type Settings,
  type Signer,
  type TrustStore,
} from "@bosun/core";
import {
  Bus,
  EventVerifier,
  Lease,
  NodeKeyDirectory,
  PreconditionFailed,
  QueueConsumer,
  StateStore,
  ensureSubscribedQueue,
  ensureTopic,
  names,
  removeNodeQueues,
  stateKeys,
  sweepWatchQueues,
  TargetGroup,
  elbv2Provider,
  type AwsClients,
  type Elbv2Provider,
  type WebNodeFact,
  type Disposition,
  type QueueRef,
  type ReceivedMessage,
} from "@bosun/aws";
import { applyEvent, fleetEvent, goneNodes, markLost, readFleet, type FleetSnapshot, type NodeRecord } from "./fleet.ts";
import { ScheduledOperations } from "./operations.ts";


export type CoordinatorState = ServiceState;

export interface CoordinatorDeps {
  clients: AwsClients;
  logger: Logger;
  clock: Clock;
  trust: TrustStore;
  signer: Signer;
  /** The ELBv2 client, for a target group (made from the SDK's standard configuration when absent). */
  elbv2?: Elbv2Provider;
}

/** How often the leader looks up scheduled backups and drills that have not answered. */
const OPERATIONS_CHECK_MS = 60_000;

/** How often the leader compares the target group with the fleet (a failed registration is made good). */
const TARGET_GROUP_RESYNC_MS = 30_000;

/** How often the leader removes watch queues whose CLI died without removing them. */
const WATCH_SWEEP_MS = 5 * 60_000;

/**
 * Keeps fleet state from events (a pure reducer, fleet.ts), marks nodes lost when their
 * heartbeats stop (and says so with node-down), publishes scheduled commands, and removes watch
 * queues left behind. Only the holder of the coordinator lease does any of that: a second
 * coordinator started by mistake (or as a standby) waits, and takes over when the leader stops
 * or dies. The fleet is written as one snapshot at most every `fleetSnapshotSeconds`.
 */
export class Coordinator {
  readonly #deps: CoordinatorDeps;
  readonly #settings: Settings;
  readonly #log: Logger;
  readonly #lifecycle: Lifecycle;
  readonly #store: StateStore;
  readonly #lease: Lease;
  #nodes = new Map<string, NodeRecord>();
  /** What changed since the last snapshot: only last-seen times (written at the regular pace), or what a person would see. */
  #dirty: "no" | "fresher" | "changed" = "no";
  #soon: NodeJS.Timeout | undefined;
  #snapshotEtag: string | undefined;
  #bus: Bus | undefined;
  #queue: QueueRef | undefined;
  #verifier: EventVerifier | undefined;
  #consumer: QueueConsumer | undefined;
  #tasks: ScheduledTask[] = [];
  #operations: ScheduledOperations | undefined;
  #timers: NodeJS.Timeout[] = [];
  #ticker: NodeJS.Timeout | undefined;
  #ticking: Promise<void> = Promise.resolve();
  #removing: Promise<void> | undefined;
  /** The AWS target group the leader keeps equal to the web nodes, when the config gives it to the coordinator. */
  readonly #targetGroup: TargetGroup | undefined;

  constructor(deps: CoordinatorDeps, options: { settings: Settings }) {
    this.#deps = deps;
    this.#settings = options.settings;
    this.#log = deps.logger.child({ component: "coordinator" });
    this.#lifecycle = new Lifecycle(this.#log, "coordinator");
    this.#store = new StateStore({ clients: deps.clients }, { bucket: options.settings.bucket });
    this.#lease = new Lease(
      { store: this.#store, clock: deps.clock },
      { key: stateKeys.lease("coordinator"), holder: `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`, ttlMs: options.settings.coordinatorLeaseSeconds * 1000 },
    );
    const targetGroup = options.settings.targetGroup;
    if (targetGroup?.runBy === "coordinator") this.#targetGroup = new TargetGroup({ elbv2: deps.elbv2 ?? elbv2Provider(), logger: this.#log }, { settings: targetGroup });
  }

  get state(): CoordinatorState {
    return this.#lifecycle.state;
  }

  /** Whether this coordinator holds the lease and does the work. */
  get leading(): boolean {
    return this.#lease.held;
  }

  nodes(): NodeRecord[] {
    return [...this.#nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  async start(): Promise<void> {
    const settings = this.#settings;
    try {
      const topicArn = await ensureTopic(this.#deps.clients, settings.cluster);
      this.#bus = new Bus({ clients: this.#deps.clients }, { topicArn });
      this.#verifier = new EventVerifier({ trust: this.#deps.trust, keys: new NodeKeyDirectory({ store: this.#store }, { topicArn }), clock: this.#deps.clock }, { maxBytes: settings.maxMessageBytes });
      this.#queue = await ensureSubscribedQueue(this.#deps.clients, topicArn, names.coordinatorQueue(settings.cluster), { kind: ["event"] }, { visibilityTimeoutSeconds: 30 });
      this.#lifecycle.enter("running", { schedules: settings.schedules.length, version: BOSUN_VERSION });
      await this.#tick();
      this.#ticker = setInterval(() => void (this.#ticking = this.#ticking.then(() => this.#tick())), (settings.coordinatorLeaseSeconds * 1000) / 3);
    } catch (error) {
      this.#lifecycle.enter("failed", { err: error });
      await this.close().catch(() => undefined);
      throw error;
    }
  }

  close(): Promise<void> {
    return this.#lifecycle.close(() => [
      { name: "stop the lease ticker", run: () => (clearInterval(this.#ticker), this.#ticking) },
      { name: "stop leading", run: () => this.#standDown("stopping") },
      { name: "give up the lease", run: () => this.#lease.release() },
    ]);
  }

  /** Marks nodes lost whose last sign of life is older than lostAfterSeconds, and publishes node-down. */
  async sweep(): Promise<void> {
    const now = this.#deps.clock.now().getTime();
    for (const node of this.#nodes.values()) {
      const lost = markLost(node, now, this.#settings.lostAfterSeconds * 1000);
      if (!lost) continue;
      try {
        // Announce first: if it fails, the next sweep still sees the node up and tries again.
        await this.#publish("node-down", node.id, { node: { id: node.id, roles: node.roles }, reason: "lost", lastSeen: node.lastSeen });
        this.#nodes.set(node.id, lost);
        this.#changed();
        this.#log.warn({ node: node.id, lastSeen: node.lastSeen }, "node lost: heartbeats stopped");
      } catch (error) {
        this.#log.error({ err: error, node: node.id }, "could not declare node lost; will try again");
      }
    }
  }

  /** Takes or renews the lease; leads while it holds it, stands down when it loses it. */
  async #tick(): Promise<void> {
    try {
      if (this.#lease.held) {
        if (!(await this.#lease.renew())) await this.#standDown("the lease was taken over");
      } else if (await this.#lease.acquire()) {
        await this.#lead();
      }
    } catch (error) {
      this.#log.warn({ err: error }, "could not take or renew the coordinator lease; trying again");
    }
  }

  async #lead(): Promise<void> {
    const settings = this.#settings;
    const fleet = await readFleet(this.#store);
    this.#nodes = new Map((fleet?.snapshot.nodes ?? []).map((n) => [n.id, n]));
    this.#snapshotEtag = fleet?.etag;
    this.#consumer = new QueueConsumer(
      { clients: this.#deps.clients, logger: this.#log },
      // Up to ten events a receive and ten deletes a request: at a thousand nodes, a tenth of the SQS requests.
      { queueUrl: this.#queue!.url, dlqUrl: this.#queue!.dlqUrl, concurrency: 10, visibilityTimeoutSeconds: 30, batchDeletesMs: 200 },
    );
    this.#consumer.start((message) => this.#onMessage(message));
    const sweepEvery = Math.max(500, Math.min(5000, (settings.lostAfterSeconds * 1000) / 4));
    this.#timers = [
      setInterval(() => void this.sweep().catch((error: unknown) => this.#log.error({ err: error }, "sweep failed")), sweepEvery),
      setInterval(() => void this.#writeSnapshot(), settings.fleetSnapshotSeconds * 1000),
      setInterval(() => void this.#sweepWatchQueues(), WATCH_SWEEP_MS),
      // As often as the watch sweep, or a quarter of a short grace period; a sweep with no node due costs no request.
      setInterval(() => void this.removeGoneNodesQueues(), Math.max(1000, Math.min(WATCH_SWEEP_MS, (settings.nodeQueueGraceSeconds * 1000) / 4))),
    ];
    void this.#sweepWatchQueues();
    this.#tasks = settings.schedules.map((schedule) => this.#schedule(schedule));
    this.#operations = new ScheduledOperations(
      {
        store: this.#store,
        logger: this.#log.child({ component: "schedules" }),
        clock: this.#deps.clock,
        verifier: () => this.#verifier!,
        nodes: () => this.nodes(),
        send: async (type, node, payload) => {
          const envelope = createMessage(this.#deps.signer, { kind: "command", type, payload, target: { nodes: [node] }, ttlSeconds: this.#settings.commandTtlSeconds, now: this.#deps.clock.now() });
          await this.#bus!.publish(envelope);
          return envelope.id;
        },
        alert: (payload) => this.#publish("alert", `alert-${randomUUID()}`, payload),
      },
      settings.backups,
    );
    await this.#operations.start();
    this.#timers.push(setInterval(() => void this.#operations?.check(), OPERATIONS_CHECK_MS));
    if (this.#targetGroup) {
      const resync = () => void this.#targetGroup!.reconcile(this.nodes().map(webNodeFact)).catch((error: unknown) => this.#log.warn({ err: error }, "could not compare the target group with the fleet"));
      resync();
      this.#timers.push(setInterval(resync, TARGET_GROUP_RESYNC_MS));
    }
    this.#log.info({ epoch: this.#lease.epoch, nodes: this.#nodes.size, schedules: this.#tasks.length + this.#operations.count }, "coordinator leading");
  }

  /** Stops doing the leader's work: events, sweeps, schedules; writes what it knows first. */
  async #standDown(why: string): Promise<void> {
    if (!this.#consumer) return;
    const consumer = this.#consumer;
    this.#consumer = undefined;
    for (const timer of this.#timers) clearInterval(timer);
    await this.#removing;
    await Promise.all(this.#tasks.map((task) => task.stop()));
    this.#tasks = [];
    await this.#operations?.stop();
    this.#operations = undefined;
    await consumer.stopReceiving();
    await consumer.drain(this.#settings.shutdownDeadlineSeconds * 1000);
    clearTimeout(this.#soon);
    if (why === "stopping") await this.#writeSnapshot();
    this.#log.info({ why }, "coordinator standing down");
  }

  /**
   * Writes the fleet, if it changed, as one object: one PUT every few seconds whatever the
   * fleet's size, instead of one per heartbeat per node. Conditional on the version this leader
   * last wrote, so a leader that lost its lease without noticing cannot overwrite its successor.
   */
  async #writeSnapshot(): Promise<void> {
    if (this.#dirty === "no") return;
    const was = this.#dirty;
    this.#dirty = "no";
    const snapshot: FleetSnapshot = { writtenAt: this.#deps.clock.now().toISOString(), epoch: this.#lease.epoch, nodes: this.nodes() };
    try {
      this.#snapshotEtag = await this.#store.put(stateKeys.fleet, snapshot, this.#snapshotEtag ? { ifMatch: this.#snapshotEtag } : { ifNoneMatch: "*" });
    } catch (error) {
      if (error instanceof PreconditionFailed) {
        this.#log.warn("the fleet snapshot was written by another coordinator; standing down");
        await this.#lease.release();
        await this.#standDown("another coordinator writes the fleet");
        return;
      }
      if (this.#dirty === "no") this.#dirty = was;
      this.#log.warn({ err: error }, "could not write the fleet snapshot; trying again");
    }
  }

  /**
   * Something a reader acts on changed (a node came, left, or serves another release): written
   * within a second, not at the next regular snapshot, so `bosun release --wait` right after a
   * node starts already counts it. Still at most one write a second.
   */
  #changed(): void {
    this.#dirty = "changed";
    this.#soon ??= setTimeout(() => {
      this.#soon = undefined;
      if (this.#consumer) void this.#writeSnapshot();
    }, 1000);
  }

  /**
   * Removes the queues, dead-letter queues and subscriptions of nodes gone (lost or
   * decommissioned) for longer than nodeQueueGraceSeconds, found by their tags, and says what
   * went with a queues-removed event per node. A node whose removal partly failed is tried again
   * at the next sweep; one whose queues are gone is recorded so, and not looked up again.
   */
  removeGoneNodesQueues(): Promise<void> {
    // One sweep at a time: a slow one must not race the next into removing the same queues twice.
    this.#removing ??= this.#removeGoneNodesQueues().finally(() => (this.#removing = undefined));
    return this.#removing;
  }

  async #removeGoneNodesQueues(): Promise<void> {
    const due = goneNodes(this.#nodes.values(), this.#deps.clock.now().getTime(), this.#settings.nodeQueueGraceSeconds * 1000);
    if (due.length === 0 || !this.#bus) return;
    let removed;
    try {
      removed = await removeNodeQueues(this.#deps.clients, { cluster: this.#settings.cluster, topicArn: this.#bus.topicArn, nodes: due.map((n) => n.id) });
    } catch (error) {
      this.#log.warn({ err: error }, "could not look up the queues of gone nodes; trying again at the next sweep");
      return;
    }
    for (const node of due) {
      const { queues, subscriptions, errors } = removed.get(node.id)!;
      if (errors.length > 0) this.#log.warn({ node: node.id, err: new AggregateError(errors), queues }, "could not remove every queue of a gone node; trying again at the next sweep");
      if (queues.length === 0 && errors.length > 0) continue;
      const payload = { node: { id: node.id, roles: node.roles }, status: node.status as "lost" | "down", lastSeen: node.lastSeen, queues, subscriptions };
      try {
        await this.#publish("queues-removed", `queues-removed-${node.id}`, payload);
      } catch (error) {
        this.#log.warn({ err: error, node: node.id }, "could not publish queues-removed");
      }
      if (errors.length > 0) continue;
      // The same reducer as the event's echo: the record says the queues are gone, so the next sweep skips it.
      const applied = applyEvent(this.#nodes.get(node.id), { type: "queues-removed", issuedAt: this.#deps.clock.now().toISOString(), correlationId: `queues-removed-${node.id}`, payload });
      if (applied) {
        this.#nodes.set(node.id, applied.record);
        this.#changed();
      }
      this.#log.info({ node: node.id, status: node.status, lastSeen: node.lastSeen, queues, subscriptions }, "removed the queues of a gone node");
    }
  }

  async #sweepWatchQueues(): Promise<void> {
    try {
      const removed = await sweepWatchQueues(this.#deps.clients, { cluster: this.#settings.cluster, topicArn: this.#bus!.topicArn, now: this.#deps.clock.now() });
      if (removed.length) this.#log.info({ removed }, "removed watch queues whose time had passed");
    } catch (error) {
      this.#log.warn({ err: error }, "could not sweep watch queues");
    }
  }

  async #onMessage(message: ReceivedMessage): Promise<Disposition> {
    const parsed = await this.#verifier!.verify(message.body);
    if (!parsed.ok) {
      const { envelope: _envelope, ...refusal } = parsed.error;
      this.#log.warn({ ...refusal, sqsMessageId: message.sqsMessageId }, `refused event: ${parsed.error.reason}`);
      return { action: "dead-letter", reason: parsed.error.reason, detail: parsed.error.detail };
    }
    this.#operations?.onEvent(parsed.value.envelope);
    const event = fleetEvent(parsed.value.envelope);
    const applied = applyEvent(event.payload.node && this.#nodes.get(event.payload.node.id), event);
    if (!applied) return { action: "delete" };
    this.#nodes.set(applied.record.id, applied.record);
    if (applied.changed) this.#changed();
    if (this.#targetGroup && applied.changed && applied.record.roles.includes("web")) {
      // Registration failing must not hold the fleet's events back: the regular comparison makes it good.
      await this.#targetGroup.follow(webNodeFact(applied.record)).catch((error: unknown) => this.#log.warn({ err: error, node: applied.record.id }, "could not update the target group"));
    }
    // Heartbeats refresh last-seen, which `bosun nodes` shows: the next regular snapshot carries it.
    else if (this.#dirty === "no") this.#dirty = "fresher";
    return { action: "delete" };
  }

  #schedule(schedule: Settings["schedules"][number]): ScheduledTask {
    const target = parseTarget(schedule.target);
    return cron.schedule(
      schedule.cron,
      () => {
        const envelope = createMessage(this.#deps.signer, {
          kind: "command",
          type: schedule.type,
          payload: schedule.payload,
          target,
          ttlSeconds: this.#settings.commandTtlSeconds,
          now: this.#deps.clock.now(),
        });
        this.#log.info({ schedule: schedule.name, commandId: envelope.id, commandType: schedule.type }, "publishing scheduled command");
        this.#bus!.publish(envelope).catch((error: unknown) => this.#log.error({ err: error, schedule: schedule.name }, "could not publish scheduled command"));
      },
      { name: schedule.name, noOverlap: true },
    );
  }

  async #publish<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>): Promise<void> {
    await this.#bus!.publish(
      createMessage(this.#deps.signer, { kind: "event", type, payload, correlationId, ttlSeconds: this.#settings.commandTtlSeconds, now: this.#deps.clock.now() }),
    );
  }
}

/** A node record as a target group reads it: up or not, and where its site is reached. */
function webNodeFact(record: NodeRecord): WebNodeFact {
  return { node: record.id, roles: record.roles, up: record.status === "up", address: record.report?.web?.address };
}
