import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  BOSUN_VERSION,
  acquirePidLock,
  createMessage,
  nodeFilterPolicy,
  type Clock,
  type DesiredRelease,
  type EventPayload,
  type EventType,
  type Logger,
  type NodeRef,
  type Settings,
  type Signer,
  type TrustStore,
} from "@bosun/core";
import {
  Bus,
  QueueConsumer,
  StateStore,
  ensureSubscribedQueue,
  ensureTopic,
  names,
  removeQueue,
  stateKeys,
  type AwsClients,
  type QueueRef,
} from "@bosun/aws";
import { Ledger } from "./ledger.ts";
import { MessagePipeline } from "./pipeline.ts";
import { ReleaseRoot } from "./web/release-root.ts";
import { syncToDesired } from "./web/sync.ts";
import type { CommandDefinition } from "./commands/index.ts";

export type AgentState = "starting" | "running" | "draining" | "stopped" | "failed";

export interface AgentDeps {
  clients: AwsClients;
  logger: Logger;
  clock: Clock;
  trust: TrustStore;
  /** The key the agent signs its events with. */
  signer: Signer;
}

export interface AgentOptions {
  settings: Settings;
  node: NodeRef;
  commands: ReadonlyMap<string, CommandDefinition<never>>;
}

/**
 * The agent on one node: receives commands from its own queue, checks each one, carries it
 * out once, and reports what happened as events on the bus.
 */
export class Agent {
  readonly #deps: AgentDeps;
  readonly #options: AgentOptions;
  readonly #log: Logger;
  readonly #ledger: Ledger;
  readonly #bootId = randomUUID();
  #reconciling: Promise<void> | undefined;
  readonly #reconcileAbort = new AbortController();
  readonly #pipeline: MessagePipeline;
  readonly #startedAt: Date;
  #state: AgentState = "starting";
  #bus: Bus | undefined;
  #queue: QueueRef | undefined;
  #consumer: QueueConsumer | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  #lock: { release(): Promise<void> } | undefined;
  #stopped: { promise: Promise<"stopped" | "decommissioned">; resolve: (how: "stopped" | "decommissioned") => void };

  constructor(deps: AgentDeps, options: AgentOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#log = deps.logger.child({ node: options.node.id });
    this.#ledger = new Ledger({ dir: join(options.settings.stateDir, "ledger") });
    this.#pipeline = new MessagePipeline(
      { ledger: this.#ledger, events: { emit: (type, correlationId, payload) => this.#emit(type, correlationId, payload) }, clock: deps.clock, trust: deps.trust, logger: this.#log },
      { node: options.node, settings: options.settings, commands: options.commands, bootId: this.#bootId, onDecommission: () => void (this.#closing ??= this.#close("decommissioned")) },
    );
    this.#startedAt = deps.clock.now();
    let resolve!: (how: "stopped" | "decommissioned") => void;
    this.#stopped = { promise: new Promise((r) => (resolve = r)), resolve };
  }

  get state(): AgentState {
    return this.#state;
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
      this.#queue = await ensureSubscribedQueue(
        this.#deps.clients,
        topicArn,
        names.nodeQueue(settings.cluster, node.id),
        nodeFilterPolicy(node.id, node.roles),
        { visibilityTimeoutSeconds: settings.visibilityTimeoutSeconds },
      );
      this.#consumer = new QueueConsumer(
        { clients: this.#deps.clients, logger: this.#log },
        {
          queueUrl: this.#queue.url,
          dlqUrl: this.#queue.dlqUrl,
          concurrency: settings.concurrency,
          visibilityTimeoutSeconds: settings.visibilityTimeoutSeconds,
        },
      );
      await new StateStore({ clients: this.#deps.clients }, { bucket: settings.bucket })
        .put(stateKeys.node(node.id), { id: node.id, roles: node.roles, status: "up", version: BOSUN_VERSION, startedAt: this.#startedAt.toISOString(), lastSeen: this.#startedAt.toISOString() })
        .catch((error: unknown) => this.#log.warn({ err: error }, "could not write the node record; the coordinator will"));
      // Before receiving: a late copy of an abandoned command then finds it already reported.
      await this.#pipeline.reportAbandoned();
      this.#consumer.start((message, signal) => this.#pipeline.handle(message, signal));
      await this.#emit("node-up", this.#bootId, { node, version: BOSUN_VERSION, startedAt: this.#startedAt.toISOString(), pid: process.pid, releases: await this.#releasesServed() });
      this.#heartbeat = setInterval(() => void this.#beat(), settings.heartbeatSeconds * 1000);
      this.#reconciling = this.#reconcile(this.#reconcileAbort.signal);
      this.#state = "running";
      this.#log.info({ roles: node.roles, queue: this.#queue.name, concurrency: settings.concurrency }, "agent running");
    } catch (error) {
      this.#state = "failed";
      await this.close().catch(() => undefined);
      throw error;
    }
  }

  /**
   * Stops receiving, lets in-flight work finish within the shutdown deadline, then
   * interrupts what is left. Safe to call twice; every step runs even when one fails.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close("stopped");
    return this.#closing;
  }

  async #close(how: "stopped" | "decommissioned"): Promise<void> {
    const failed = this.#state === "failed";
    this.#state = "draining";
    clearInterval(this.#heartbeat);
    const errors: unknown[] = [];
    const step = async (name: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (error) {
        errors.push(error);
        this.#log.error({ err: error, step: name }, "shutdown step failed");
      }
    };
    await step("stop receiving", async () => this.#consumer?.stopReceiving());
    await step("stop reconciling", async () => {
      this.#reconcileAbort.abort();
      await this.#reconciling;
    });
    await step("drain", async () => {
      const deadline = this.#options.settings.shutdownDeadlineSeconds * 1000;
      if (this.#consumer && this.#consumer.inFlight > 0) this.#log.info({ inFlight: this.#consumer.inFlight, deadlineMs: deadline }, "waiting for in-flight jobs");
      const aborted = (await this.#consumer?.drain(deadline)) ?? 0;
      if (aborted > 0) this.#log.warn({ aborted }, "stop deadline passed; interrupted jobs were told to checkpoint");
    });
    if (how === "decommissioned") {
      await step("announce node-down", () => this.#emit("node-down", this.#bootId, { node: this.#options.node, reason: "decommissioned" }));
      await step("remove queue", async () => this.#queue && removeQueue(this.#deps.clients, this.#queue, { keepDeadLetters: true }));
    }
    await step("release the state directory", async () => this.#lock?.release());
    this.#state = failed ? "failed" : "stopped";
    this.#log.info({ how, errors: errors.length }, "agent stopped");
    this.#stopped.resolve(how);
  }

  async #beat(): Promise<void> {
    const uptimeSeconds = Math.round((this.#deps.clock.now().getTime() - this.#startedAt.getTime()) / 1000);
    await this.#emit("heartbeat", this.#bootId, { node: this.#options.node, inFlight: this.#consumer?.inFlight ?? 0, uptimeSeconds, releases: await this.#releasesServed() }).catch(
      (error: unknown) => this.#log.warn({ err: error }, "could not publish heartbeat"),
    );
  }

  /**
   * Once subscribed, each app is brought to its desired release: one published between the
   * boot-time sync and the subscription reached no queue. Commands after this go through the ledger.
   */
  async #reconcile(signal: AbortSignal): Promise<void> {
    // Only web nodes serve apps; a balancer or db node with apps in its config deploys nothing.
    if (!this.#options.node.roles.includes("web")) {
      if (Object.keys(this.#options.settings.apps).length > 0) this.#log.info("not a web node: apps in the config are not deployed here");
      return;
    }
    const store = new StateStore({ clients: this.#deps.clients }, { bucket: this.#options.settings.bucket });
    for (const [app, settings] of Object.entries(this.#options.settings.apps)) {
      const log = this.#log.child({ app });
      try {
        const desired = await store.get<DesiredRelease>(stateKeys.release(app));
        if (!desired) {
          log.info("no release of this app published yet");
          continue;
        }
        const action = await syncToDesired(new ReleaseRoot({ logger: log }, { app, settings }), desired, signal, log);
        if (action === "activated") log.info({ commit: desired.commit }, "brought app to its desired release after subscribing");
        else log.info({ commit: desired.commit, action }, "app checked against its desired release after subscribing");
      } catch (error) {
        if (!signal.aborted) log.error({ err: error }, "could not bring app to its desired release; the next release will");
      }
    }
  }

  /** What each configured app's `current` points at, for heartbeats and `bosun releases`. */
  async #releasesServed(): Promise<Record<string, string>> {
    const served: Record<string, string> = {};
    if (!this.#options.node.roles.includes("web")) return served;
    for (const [app, settings] of Object.entries(this.#options.settings.apps)) {
      const commit = await new ReleaseRoot({ logger: this.#log }, { app, settings }).current();
      if (commit) served[app] = commit;
    }
    return served;
  }

  async #emit<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>): Promise<void> {
    const envelope = createMessage(this.#deps.signer, {
      kind: "event",
      type,
      payload,
      correlationId,
      ttlSeconds: this.#options.settings.commandTtlSeconds,
      now: this.#deps.clock.now(),
    });
    await this.#bus!.publish(envelope);
  }
}
