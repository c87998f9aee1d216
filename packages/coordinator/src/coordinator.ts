import cron, { type ScheduledTask } from "node-cron";
import {
  BOSUN_VERSION,
  Lifecycle,
  createMessage,
  eventSchemas,
  isEventType,
  parseMessage,
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
import { Bus, QueueConsumer, StateStore, ensureSubscribedQueue, ensureTopic, names, stateKeys, type AwsClients, type Disposition, type ReceivedMessage } from "@bosun/aws";
import { applyEvent, fleetEvent, loadNodeRecords, markLost, type NodeRecord } from "./fleet.ts";

export type CoordinatorState = ServiceState;

export interface CoordinatorDeps {
  clients: AwsClients;
  logger: Logger;
  clock: Clock;
  trust: TrustStore;
  signer: Signer;
}

/**
 * Keeps fleet state from events (a pure reducer, fleet.ts, with the records written beside it),
 * marks nodes lost when their heartbeats stop (and says so with node-down), and publishes
 * scheduled commands.
 */
export class Coordinator {
  readonly #deps: CoordinatorDeps;
  readonly #settings: Settings;
  readonly #log: Logger;
  readonly #lifecycle: Lifecycle;
  readonly #nodes = new Map<string, NodeRecord>();
  readonly #store: StateStore;
  readonly #tasks: ScheduledTask[] = [];
  #bus: Bus | undefined;
  #consumer: QueueConsumer | undefined;
  #sweep: NodeJS.Timeout | undefined;

  constructor(deps: CoordinatorDeps, options: { settings: Settings }) {
    this.#deps = deps;
    this.#settings = options.settings;
    this.#log = deps.logger.child({ component: "coordinator" });
    this.#lifecycle = new Lifecycle(this.#log, "coordinator");
    this.#store = new StateStore({ clients: deps.clients }, { bucket: options.settings.bucket });
  }

  get state(): CoordinatorState {
    return this.#lifecycle.state;
  }

  nodes(): NodeRecord[] {
    return [...this.#nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  async start(): Promise<void> {
    const settings = this.#settings;
    try {
      const topicArn = await ensureTopic(this.#deps.clients, settings.cluster);
      this.#bus = new Bus({ clients: this.#deps.clients }, { topicArn });
      const queue = await ensureSubscribedQueue(this.#deps.clients, topicArn, names.coordinatorQueue(settings.cluster), { kind: ["event"] }, {
        visibilityTimeoutSeconds: 30,
      });
      for (const record of await loadNodeRecords(this.#store)) this.#nodes.set(record.id, record);
      this.#consumer = new QueueConsumer(
        { clients: this.#deps.clients, logger: this.#log },
        { queueUrl: queue.url, dlqUrl: queue.dlqUrl, concurrency: 1, visibilityTimeoutSeconds: 30 },
      );
      this.#consumer.start((message) => this.#onMessage(message));
      const every = Math.max(500, Math.min(5000, (settings.lostAfterSeconds * 1000) / 4));
      this.#sweep = setInterval(() => void this.sweep().catch((error: unknown) => this.#log.error({ err: error }, "sweep failed")), every);
      for (const schedule of settings.schedules) this.#schedule(schedule);
      this.#lifecycle.enter("running", { nodes: this.#nodes.size, schedules: settings.schedules.length, version: BOSUN_VERSION });
    } catch (error) {
      this.#lifecycle.enter("failed", { err: error });
      await this.close().catch(() => undefined);
      throw error;
    }
  }

  close(): Promise<void> {
    return this.#lifecycle.close(() => [
      { name: "stop the sweep", run: () => clearInterval(this.#sweep) },
      { name: "stop the schedules", run: () => Promise.all(this.#tasks.map((task) => task.stop())) },
      { name: "stop receiving", run: () => this.#consumer?.stopReceiving() },
      { name: "drain", run: () => this.#consumer?.drain(this.#settings.shutdownDeadlineSeconds * 1000) },
    ]);
  }

  /** Marks nodes lost whose last sign of life is older than lostAfterSeconds, and publishes node-down. */
  async sweep(): Promise<void> {
    const now = this.#deps.clock.now().getTime();
    for (const node of this.#nodes.values()) {
      const lost = markLost(node, now, this.#settings.lostAfterSeconds * 1000);
      if (!lost) continue;
      try {
        // Announce first: if the record write fails, the next sweep still sees the node up and tries again.
        await this.#publish("node-down", node.id, { node: { id: node.id, roles: node.roles }, reason: "lost", lastSeen: node.lastSeen });
        this.#nodes.set(node.id, lost);
        this.#log.warn({ node: node.id, lastSeen: node.lastSeen }, "node lost: heartbeats stopped");
        await this.#store.put(stateKeys.node(node.id), lost);
      } catch (error) {
        this.#log.error({ err: error, node: node.id }, "could not declare node lost; will try again");
      }
    }
  }

  async #onMessage(message: ReceivedMessage): Promise<Disposition> {
    const parsed = parseMessage(message.body, {
      trust: this.#deps.trust,
      now: this.#deps.clock.now(),
      maxBytes: this.#settings.maxMessageBytes,
      schemaFor: (kind, type) => (kind === "event" && isEventType(type) ? eventSchemas[type] : undefined),
    });
    if (!parsed.ok) {
      this.#log.warn({ ...parsed.error, envelope: undefined, sqsMessageId: message.sqsMessageId }, `refused event: ${parsed.error.reason}`);
      return { action: "dead-letter", reason: parsed.error.reason, detail: parsed.error.detail };
    }
    const event = fleetEvent(parsed.value.envelope);
    const applied = applyEvent(this.#nodes.get(event.payload.node.id), event);
    if (!applied) return { action: "delete" };
    this.#nodes.set(applied.record.id, applied.record);
    // Heartbeats write through too, so `bosun nodes` shows a fresh last-seen time.
    if (applied.changed || event.type === "heartbeat") await this.#store.put(stateKeys.node(applied.record.id), applied.record);
    return { action: "delete" };
  }

  #schedule(schedule: Settings["schedules"][number]): void {
    const target = parseTarget(schedule.target);
    const task = cron.schedule(
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
    this.#tasks.push(task);
  }

  async #publish<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>): Promise<void> {
    await this.#bus!.publish(
      createMessage(this.#deps.signer, { kind: "event", type, payload, correlationId, ttlSeconds: this.#settings.commandTtlSeconds, now: this.#deps.clock.now() }),
    );
  }
}
