import cron, { type ScheduledTask } from "node-cron";
import {
  BOSUN_VERSION,
  createMessage,
  eventSchemas,
  isEventType,
  parseMessage,
  parseTarget,
  type Clock,
  type Envelope,
  type EventPayload,
  type EventType,
  type Logger,
  type Settings,
  type Signer,
  type TrustStore,
} from "@bosun/core";
import { Bus, QueueConsumer, StateStore, ensureSubscribedQueue, ensureTopic, names, stateKeys, type AwsClients, type Disposition, type ReceivedMessage } from "@bosun/aws";

export type NodeStatus = "up" | "lost" | "down";

/** What the fleet knows of one node; kept in S3 at state/nodes/<id>.json. */
export interface NodeRecord {
  id: string;
  roles: string[];
  status: NodeStatus;
  version?: string;
  startedAt?: string;
  lastSeen: string;
  inFlight?: number;
  /** The commit each app's `current` points at on the node. */
  releases?: Record<string, string>;
  downReason?: string;
  lastCommand?: { id: string; type: string; outcome: "done" | "failed" | "refused"; at: string };
}

export type CoordinatorState = "starting" | "running" | "draining" | "stopped" | "failed";

export interface CoordinatorDeps {
  clients: AwsClients;
  logger: Logger;
  clock: Clock;
  trust: TrustStore;
  signer: Signer;
}

/**
 * Keeps fleet state from events, marks nodes lost when their heartbeats stop (and says
 * so with node-down), and publishes scheduled commands.
 */
export class Coordinator {
  readonly #deps: CoordinatorDeps;
  readonly #settings: Settings;
  readonly #log: Logger;
  readonly #nodes = new Map<string, NodeRecord>();
  readonly #store: StateStore;
  readonly #tasks: ScheduledTask[] = [];
  #state: CoordinatorState = "starting";
  #bus: Bus | undefined;
  #consumer: QueueConsumer | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(deps: CoordinatorDeps, options: { settings: Settings }) {
    this.#deps = deps;
    this.#settings = options.settings;
    this.#log = deps.logger.child({ component: "coordinator" });
    this.#store = new StateStore({ clients: deps.clients }, { bucket: options.settings.bucket });
  }

  get state(): CoordinatorState {
    return this.#state;
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
      this.#state = "running";
      this.#log.info({ nodes: this.#nodes.size, schedules: settings.schedules.length, version: BOSUN_VERSION }, "coordinator running");
    } catch (error) {
      this.#state = "failed";
      await this.close().catch(() => undefined);
      throw error;
    }
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      const failed = this.#state === "failed";
      this.#state = "draining";
      clearInterval(this.#sweep);
      for (const task of this.#tasks) await Promise.resolve(task.stop()).catch(() => undefined);
      try {
        await this.#consumer?.stopReceiving();
        await this.#consumer?.drain(this.#settings.shutdownDeadlineSeconds * 1000);
      } catch (error) {
        this.#log.error({ err: error }, "could not stop consuming cleanly");
      }
      this.#state = failed ? "failed" : "stopped";
      this.#log.info("coordinator stopped");
    })();
    return this.#closing;
  }

  /** Marks nodes lost whose last sign of life is older than lostAfterSeconds, and publishes node-down. */
  async sweep(): Promise<void> {
    const now = this.#deps.clock.now().getTime();
    for (const node of this.#nodes.values()) {
      if (node.status !== "up" || now - Date.parse(node.lastSeen) <= this.#settings.lostAfterSeconds * 1000) continue;
      try {
        // Announce first: if the record write fails, the next sweep still sees the node up and tries again.
        await this.#publish("node-down", node.id, { node: { id: node.id, roles: node.roles }, reason: "lost", lastSeen: node.lastSeen });
        node.status = "lost";
        node.downReason = `no heartbeat since ${node.lastSeen}`;
        this.#log.warn({ node: node.id, lastSeen: node.lastSeen }, "node lost: heartbeats stopped");
        await this.#store.put(stateKeys.node(node.id), node);
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
      this.#log.warn({ ...parsed.error, sqsMessageId: message.sqsMessageId }, `refused event: ${parsed.error.reason}`);
      return { action: "dead-letter", reason: parsed.error.reason, detail: parsed.error.detail };
    }
    await this.#apply(parsed.value.envelope);
    return { action: "delete" };
  }

  async #apply(event: Envelope): Promise<void> {
    if (!isEventType(event.type)) return;
    const at = event.issuedAt;
    const payload = event.payload as EventPayload<EventType>;
    const ref = payload.node;
    const known = this.#nodes.get(ref.id);
    // Events can arrive out of order; an older one never overwrites newer knowledge.
    if (known && Date.parse(known.lastSeen) > Date.parse(at) && event.type !== "node-down") return;
    const record: NodeRecord = known ?? { id: ref.id, roles: ref.roles, status: "up", lastSeen: at };
    record.roles = ref.roles;
    let changed = !known;
    switch (event.type) {
      case "node-up": {
        const up = payload as EventPayload<"node-up">;
        changed ||= record.status !== "up";
        Object.assign(record, { status: "up", version: up.version, startedAt: up.startedAt });
        if (up.releases) record.releases = up.releases;
        delete record.downReason;
        break;
      }
      case "heartbeat": {
        const beat = payload as EventPayload<"heartbeat">;
        if (record.status !== "up") this.#log.info({ node: ref.id }, "node is back");
        changed ||= record.status !== "up";
        record.status = "up";
        record.inFlight = beat.inFlight;
        changed ||= JSON.stringify(record.releases ?? {}) !== JSON.stringify(beat.releases ?? {});
        if (beat.releases) record.releases = beat.releases;
        delete record.downReason;
        break;
      }
      case "node-down": {
        const down = payload as EventPayload<"node-down">;
        if (down.reason === "decommissioned" || record.status === "up") {
          changed ||= record.status !== "down";
          record.status = down.reason === "decommissioned" ? "down" : "lost";
          record.downReason = down.reason;
        }
        break;
      }
      case "done":
      case "failed":
      case "refused": {
        record.lastCommand = {
          id: event.correlationId,
          type: (payload as { commandType?: string; type?: string }).commandType ?? (payload as { type?: string }).type ?? "unknown",
          outcome: event.type,
          at,
        };
        const result = (payload as { result?: { status?: string; app?: string; commit?: string } }).result;
        if (event.type === "done" && result?.status === "active" && result.app && result.commit) {
          record.releases = { ...record.releases, [result.app]: result.commit };
        }
        changed = true;
        break;
      }
      default:
        break;
    }
    if (event.type !== "node-down") record.lastSeen = at;
    this.#nodes.set(record.id, record);
    // Heartbeats write through too, so `bosun nodes` shows a fresh last-seen time.
    if (changed || event.type === "heartbeat") await this.#store.put(stateKeys.node(record.id), record);
  }

  #schedule(schedule: Settings["schedules"][number]): void {
    const target = parseTarget(schedule.target);
    const task = cron.schedule(schedule.cron, () => {
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
    }, { name: schedule.name, noOverlap: true });
    this.#tasks.push(task);
  }

  async #publish<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>): Promise<void> {
    await this.#bus!.publish(
      createMessage(this.#deps.signer, { kind: "event", type, payload, correlationId, ttlSeconds: this.#settings.commandTtlSeconds, now: this.#deps.clock.now() }),
    );
  }
}

export async function loadNodeRecords(store: StateStore): Promise<NodeRecord[]> {
  const keys = await store.list(stateKeys.nodesPrefix);
  const records = await Promise.all(keys.map((key) => store.get<NodeRecord>(key)));
  return records.filter((r): r is NodeRecord => r !== undefined).sort((a, b) => a.id.localeCompare(b.id));
}
