import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  BOSUN_VERSION,
  Lifecycle,
  acquirePidLock,
  type Clock,
  type EventPayload,
  type EventType,
  type Logger,
  type NodeRef,
  type RoleReports,
  type ServiceState,
  type Settings,
  type TrustStore,
} from "@bosun/core";
import {
  Bus,
  NodeKeyDirectory,
  QueueConsumer,
  StateStore,
  ensureSubscribedQueue,
  nodeQueueTags,
  ensureTopic,
  names,
  nodeFilterPolicy,
  removeQueue,
  signRecord,
  type AwsClients,
  type QueueRef,
} from "@bosun/aws";
import type { CommandDefinition } from "./command.ts";
import { spineCommands } from "./commands/index.ts";
import { Ledger } from "./ledger.ts";
import { NodeKeyring } from "./node-key.ts";
import { NodeEventPublisher } from "./node-events.ts";
import { MessagePipeline, type EventSink } from "./pipeline.ts";
import type { Role, RoleFactory, RoleServices } from "./role.ts";

export type AgentState = ServiceState;

export interface AgentDeps {
  clients: AwsClients;
  logger: Logger;
  clock: Clock;
  trust: TrustStore;
}

export interface AgentOptions {
  settings: Settings;
  node: NodeRef;
  /** The node's roles, as plug-ins (see roles/); the agent itself knows none. */
  roles: readonly RoleFactory[];
}

/**
 * The agent on one node: receives commands from its own queue, checks each one, carries it
 * out once (through the message pipeline), and reports what happened as events on the bus.
 * What it does beyond the spine's own commands comes from its roles.
 */
export class Agent {
  readonly #deps: AgentDeps;
  readonly #options: AgentOptions;
  readonly #log: Logger;
  readonly #lifecycle: Lifecycle;
  readonly #ledger: Ledger;
  readonly #bootId = randomUUID();
  readonly #roles: Role[];
  readonly #pipeline: MessagePipeline;
  readonly #startedAt: Date;
  readonly #subscribedAbort = new AbortController();
  #subscribed: Promise<unknown> | undefined;
  #bus: Bus | undefined;
  #queue: QueueRef | undefined;
  #consumer: QueueConsumer | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #lock: { release(): Promise<void> } | undefined;
  readonly #store: StateStore;
  #keyring: NodeKeyring | undefined;
  #nodeKeyDirectory: NodeKeyDirectory | undefined;
  #events: NodeEventPublisher | undefined;
  #decommissioned = false;
  #stopped: { promise: Promise<"stopped" | "decommissioned">; resolve: (how: "stopped" | "decommissioned") => void };

  constructor(deps: AgentDeps, options: AgentOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#log = deps.logger.child({ node: options.node.id });
    this.#lifecycle = new Lifecycle(this.#log, "agent");
    this.#ledger = new Ledger({ dir: join(options.settings.stateDir, "ledger") });
    this.#startedAt = deps.clock.now();
    // Events go out once the agent has started and holds its node key; the pipeline and roles get them through here.
    const events: EventSink = {
      emit: (type, correlationId, payload, emitOptions) => {
        if (!this.#events) return Promise.reject(new Error(`cannot publish ${type} before the agent has started`));
        return this.#events.emit(type, correlationId, payload, emitOptions);
      },
    };
    this.#store = new StateStore({ clients: deps.clients }, { bucket: options.settings.bucket });
    const services: RoleServices = {
      node: options.node,
      settings: options.settings,
      logger: this.#log,
      clock: deps.clock,
      clients: deps.clients,
      store: this.#store,
      trust: deps.trust,
      events,
      signRecord: (type, payload) => {
        if (!this.#keyring) throw new Error(`cannot sign a ${type} record before the agent has started`);
        return signRecord(this.#keyring.signer(options.node.id), type, payload, deps.clock.now());
      },
      nodeKeyDirectory: () => {
        if (!this.#bus) throw new Error("cannot look up nodes' keys before the agent has started");
        return (this.#nodeKeyDirectory ??= new NodeKeyDirectory({ store: this.#store }, { topicArn: this.#bus.topicArn }));
      },
      nodeKeys: {
        rotate: async () => {
          const kid = await this.#keyring!.rotate();
          await this.#keyring!.register(this.#store, this.#bus!.topicArn, options.node.id);
          return kid;
        },
        retire: async () => {
          const retired = await this.#keyring!.retire();
          await this.#keyring!.register(this.#store, this.#bus!.topicArn, options.node.id);
          return retired;
        },
      },
    };
    this.#roles = options.roles.map((factory) => factory(services));
    this.#pipeline = new MessagePipeline(
      { ledger: this.#ledger, events, clock: deps.clock, trust: deps.trust, logger: this.#log, services },
      { node: options.node, settings: options.settings, commands: commandTable(this.#roles), bootId: this.#bootId, onDecommission: () => this.#decommission() },
    );
    let resolve!: (how: "stopped" | "decommissioned") => void;
    this.#stopped = { promise: new Promise((r) => (resolve = r)), resolve };
  }

  get state(): AgentState {
    return this.#lifecycle.state;
  }

  /** Resolves when the agent has stopped, saying whether it was decommissioned. */
  get stopped(): Promise<"stopped" | "decommissioned"> {
    return this.#stopped.promise;
  }

  async start(): Promise<void> {
    const { settings, node } = this.#options;
    try {
      // One agent per state directory: two would share one ledger and run commands twice.
      await mkdir(settings.stateDir, { recursive: true });
      this.#lock = await acquirePidLock(join(settings.stateDir, "agent.pid"), `state directory ${settings.stateDir}`);
      await this.#ledger.open();
      await this.#ledger.prune(new Date(this.#deps.clock.now().getTime() - 3600_000));
      const topicArn = await ensureTopic(this.#deps.clients, settings.cluster);
      this.#bus = new Bus({ clients: this.#deps.clients }, { topicArn });
      this.#queue = await ensureSubscribedQueue(this.#deps.clients, topicArn, names.nodeQueue(settings.cluster, node.id), nodeFilterPolicy(node.id, node.roles), {
        visibilityTimeoutSeconds: settings.visibilityTimeoutSeconds,
        // So the coordinator can remove them (and the subscription) once this node is gone.
        tags: nodeQueueTags(settings.cluster, node),
      });
      this.#consumer = new QueueConsumer(
        { clients: this.#deps.clients, logger: this.#log },
        {
          queueUrl: this.#queue.url,
          dlqUrl: this.#queue.dlqUrl,
          concurrency: settings.concurrency,
          visibilityTimeoutSeconds: settings.visibilityTimeoutSeconds,
          deadLettered: this.#ledger.deadLettered,
        },
      );
      // The node's own key signs its events; its public half is registered under the node's own prefix first.
      this.#keyring = await NodeKeyring.open(settings.stateDir);
      await this.#keyring.register(this.#store, topicArn, node.id);
      this.#events = new NodeEventPublisher(
        { bus: this.#bus, store: this.#store, clock: this.#deps.clock, logger: this.#log },
        { node, keyring: this.#keyring, ttlSeconds: settings.commandTtlSeconds },
      );
      // Before receiving: a late copy of an abandoned command then finds it already reported.
      await this.#pipeline.reportAbandoned();
      this.#consumer.start((message, signal) => this.#pipeline.handle(message, signal));
      await this.#emit("node-up", this.#bootId, { node, version: BOSUN_VERSION, startedAt: this.#startedAt.toISOString(), pid: process.pid, report: await this.#report() });
      this.#heartbeat = setInterval(() => void this.#beat(), settings.heartbeatSeconds * 1000);
      this.#subscribed = Promise.allSettled(this.#roles.map((role) => role.onSubscribed?.(this.#subscribedAbort.signal)));
      this.#lifecycle.enter("running", { roles: node.roles, plugins: this.#roles.map((r) => r.name), queue: this.#queue.name, concurrency: settings.concurrency });
    } catch (error) {
      this.#lifecycle.enter("failed", { err: error });
      await this.close().catch(() => undefined);
      throw error;
    }
  }

  /**
   * Stops receiving, lets in-flight work finish within the shutdown deadline, then
   * interrupts what is left. Safe to call twice; every step runs even when one fails.
   */
  async close(): Promise<void> {
    const deadline = this.#options.settings.shutdownDeadlineSeconds * 1000;
    const how = () => (this.#decommissioned ? "decommissioned" : "stopped");
    await this.#lifecycle.close(
      () => [
        { name: "stop heartbeats", run: () => clearInterval(this.#heartbeat) },
        { name: "stop receiving", run: () => this.#consumer?.stopReceiving() },
        { name: "stop reconciling", run: () => (this.#subscribedAbort.abort(), this.#subscribed) },
        {
          name: "drain in-flight jobs",
          run: async () => {
            if (this.#consumer && this.#consumer.inFlight > 0) this.#log.info({ inFlight: this.#consumer.inFlight, deadlineMs: deadline }, "waiting for in-flight jobs");
            const aborted = (await this.#consumer?.drain(deadline)) ?? 0;
            if (aborted > 0) this.#log.warn({ aborted }, "stop deadline passed; interrupted jobs were told to checkpoint");
          },
        },
        // Leaving is announced while the roles still run: a web node's server keeps serving until the balancers have drained it.
        ...(this.#decommissioned
          ? [
              { name: "announce node-down", run: () => this.#emit("node-down", this.#bootId, { node: this.#options.node, reason: "decommissioned" }) },
              ...this.#roles.map((role) => ({ name: `let the ${role.name} role leave`, run: () => role.leave?.(AbortSignal.timeout(3_600_000)) })),
            ]
          : []),
        ...this.#roles.map((role) => ({ name: `stop the ${role.name} role`, run: () => role.close?.() })),
        ...(this.#decommissioned ? [{ name: "remove the queue", run: () => this.#queue && removeQueue(this.#deps.clients, this.#queue, { keepDeadLetters: true }) }] : []),
        { name: "release the state directory", run: () => this.#lock?.release() },
      ],
      () => ({ how: how() }),
    );
    this.#stopped.resolve(how());
  }

  #decommission(): void {
    this.#decommissioned = true;
    void this.close();
  }

  async #beat(): Promise<void> {
    const uptimeSeconds = Math.round((this.#deps.clock.now().getTime() - this.#startedAt.getTime()) / 1000);
    await this.#emit("heartbeat", this.#bootId, { node: this.#options.node, inFlight: this.#consumer?.inFlight ?? 0, uptimeSeconds, report: await this.#report() }).catch(
      (error: unknown) => this.#log.warn({ err: error }, "could not publish heartbeat"),
    );
  }

  /** What each role adds to node-up and heartbeats, under its name. */
  async #report(): Promise<RoleReports> {
    const reports: Record<string, unknown> = {};
    for (const role of this.#roles) {
      if (!role.report) continue;
      try {
        reports[role.name] = await role.report();
      } catch (error) {
        this.#log.warn({ err: error, role: role.name }, "role could not report");
      }
    }
    return reports as RoleReports;
  }

  #emit<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>): Promise<void> {
    if (!this.#events) return Promise.reject(new Error(`cannot publish ${type} before the agent has started`));
    return this.#events.emit(type, correlationId, payload);
  }
}

/** The spine's commands and each role's, by type; two roles may not claim one type. */
function commandTable(roles: readonly Role[]): ReadonlyMap<string, CommandDefinition<never>> {
  const table = new Map<string, CommandDefinition<never>>(spineCommands.map((c) => [c.type, c]));
  for (const role of roles) {
    for (const command of role.commands) {
      if (table.has(command.type)) throw new Error(`command type ${command.type} of role ${role.name} is already taken`);
      table.set(command.type, command);
    }
  }
  return table;
}
