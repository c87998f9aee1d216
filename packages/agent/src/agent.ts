import { randomUUID } from "node:crypto";
import { join } from "node:path";
import {
  BOSUN_VERSION,
  createMessage,
  errorMessage,
  eventSchemas,
  nodeFilterPolicy,
  parseMessage,
  targetsNode,
  type Clock,
  type DesiredRelease,
  type Envelope,
  type EventPayload,
  type EventType,
  type Logger,
  type NodeRef,
  type Refusal,
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
  type Disposition,
  type QueueRef,
  type ReceivedMessage,
} from "@bosun/aws";
import { Ledger, type LedgerEntry } from "./ledger.ts";
import { ReleaseRoot } from "./web/release-root.ts";
import { syncToDesired } from "./web/sync.ts";
import type { CommandDefinition, CommandOutcome } from "./commands/index.ts";

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
  /** Commands being handled in this process right now. */
  readonly #running = new Set<string>();
  readonly #startedAt: Date;
  #state: AgentState = "starting";
  #bus: Bus | undefined;
  #queue: QueueRef | undefined;
  #consumer: QueueConsumer | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  #stopped: { promise: Promise<"stopped" | "decommissioned">; resolve: (how: "stopped" | "decommissioned") => void };

  constructor(deps: AgentDeps, options: AgentOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#log = deps.logger.child({ node: options.node.id });
    this.#ledger = new Ledger({ dir: join(options.settings.stateDir, "ledger") });
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
      await this.#reportAbandoned();
      this.#consumer.start((message, signal) => this.#onMessage(message, signal));
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
    for (const [app, settings] of Object.entries(this.#options.settings.apps)) {
      const commit = await new ReleaseRoot({ logger: this.#log }, { app, settings }).current();
      if (commit) served[app] = commit;
    }
    return served;
  }

  /** One message: parse and check, dedupe against the ledger, handle, acknowledge. */
  async #onMessage(message: ReceivedMessage, signal: AbortSignal): Promise<Disposition> {
    const checked = this.#check(message);
    if (!checked.ok) return this.#refused(checked.refusal, message);
    const { envelope, payload } = checked;
    const definition = this.#options.commands.get(envelope.type)!;
    const log = this.#log.child({ commandId: envelope.id, commandType: envelope.type, issuer: envelope.issuer });
    const decision = await this.#dedupe(envelope, definition, message, log);
    if (decision.action !== "run") return decision.disposition;
    return this.#run(envelope, payload, definition, message, signal, log, decision.resumed);
  }

  /** Signature, permission, lifetime, type and payload (core's parseMessage), then the target. */
  #check(message: ReceivedMessage): { ok: true; envelope: Envelope; payload: unknown } | { ok: false; refusal: Refusal } {
    const { settings, node, commands } = this.#options;
    const parsed = parseMessage(message.body, {
      trust: this.#deps.trust,
      now: this.#deps.clock.now(),
      maxBytes: settings.maxMessageBytes,
      schemaFor: (kind, type) => (kind === "command" ? commands.get(type)?.payload : undefined),
    });
    if (!parsed.ok) return { ok: false, refusal: parsed.error };
    const { envelope, payload } = parsed.value;
    if (!targetsNode(envelope.target, node.id, node.roles)) {
      const about = { messageId: envelope.id, type: envelope.type, issuer: envelope.issuer, correlationId: envelope.correlationId };
      return { ok: false, refusal: { ...about, envelope, verified: true, reason: "wrong-target", detail: "this node is not among the command's targets" } };
    }
    return { ok: true, envelope, payload };
  }

  /**
   * What the ledger says of this command: new (run it), finished (say so again, no effect),
   * running here (leave it), or started by a run that died (resume it, or report it failed).
   */
  async #dedupe(
    envelope: Envelope,
    definition: CommandDefinition<never>,
    message: ReceivedMessage,
    log: Logger,
  ): Promise<{ action: "run"; resumed: boolean } | { action: "settle"; disposition: Disposition }> {
    const seen = await this.#ledger.get(envelope.id);
    if (!seen) return { action: "run", resumed: false };
    const about = { messageId: envelope.id, type: envelope.type, issuer: envelope.issuer, correlationId: envelope.correlationId, envelope, verified: true };
    if (seen.sqsMessageId !== message.sqsMessageId) {
      return { action: "settle", disposition: await this.#refused({ ...about, reason: "replayed", detail: `command ${envelope.id} was already received (${seen.state})` }, message) };
    }
    if (seen.state !== "started") {
      // The same delivery again: the effect happened; say so again in case the first report was lost.
      log.info({ state: seen.state }, "duplicate delivery of a finished command; no effect");
      if (seen.outcome) await this.#emitTerminal(seen, envelope, log);
      return { action: "settle", disposition: { action: "delete" } };
    }
    if (this.#running.has(envelope.id)) {
      log.warn("command is already running in this agent; ignoring the duplicate");
      return { action: "settle", disposition: { action: "retry", retryAfterSeconds: this.#options.settings.visibilityTimeoutSeconds } };
    }
    if (definition.onInterrupted === "fail") {
      log.warn("command was interrupted before it finished and cannot be resumed; reporting it failed");
      await this.#finish(envelope, message, log, { status: "failed", error: "interrupted before it finished", code: "INTERRUPTED" }, 0, true);
      return { action: "settle", disposition: { action: "delete" } };
    }
    log.warn({ sameRun: seen.bootId === this.#bootId }, "resuming a command that was started and did not finish");
    return { action: "run", resumed: true };
  }

  async #run(
    envelope: Envelope,
    payload: unknown,
    definition: CommandDefinition<never>,
    message: ReceivedMessage,
    signal: AbortSignal,
    log: Logger,
    resumed: boolean,
  ): Promise<Disposition> {
    const { settings, node } = this.#options;
    this.#running.add(envelope.id);
    try {
      await this.#ledger.put(this.#entry(envelope, message, "started"));
      // The ack goes out while the handler starts: waiting for it would delay every node's work
      // (half the activation spread across 50 nodes). It is awaited before the result, so issuers see ack first.
      const acked = this.#emit("ack", envelope.id, { node, commandType: envelope.type, receiveCount: message.receiveCount, resumed }).catch((error: unknown) =>
        log.warn({ err: error }, "could not publish the ack; going on with the command"),
      );
      log.info({ receiveCount: message.receiveCount, resumed }, "command accepted");

      const started = performance.now();
      let outcome: CommandOutcome;
      try {
        outcome = await definition.handle({
          payload: payload as never,
          envelope,
          node,
          signal,
          log,
          stateDir: settings.stateDir,
          settings,
          resumed,
          progress: (text, fraction) =>
            this.#emit("progress", envelope.id, { node, commandType: envelope.type, message: text, ...(fraction === undefined ? {} : { fraction }) }).catch(
              (error: unknown) => log.warn({ err: error }, "could not publish progress"),
            ),
        });
      } catch (error) {
        log.error({ err: error }, "command handler threw");
        outcome = { status: "failed", error: errorMessage(error), code: "HANDLER_ERROR" };
      }
      await acked;
      return await this.#acknowledge(envelope, definition, message, log, outcome, Math.round(performance.now() - started));
    } finally {
      this.#running.delete(envelope.id);
    }
  }

  /** Records the outcome, reports it, and says what to do with the message. */
  async #acknowledge(
    envelope: Envelope,
    definition: CommandDefinition<never>,
    message: ReceivedMessage,
    log: Logger,
    outcome: CommandOutcome,
    durationMs: number,
  ): Promise<Disposition> {
    if (outcome.status === "retry") {
      log.info({ reason: outcome.reason, afterSeconds: outcome.afterSeconds }, "command will be retried");
      // Not started as far as the next delivery is concerned: it runs afresh.
      await this.#ledger.forget(envelope.id);
      return { action: "retry", retryAfterSeconds: outcome.afterSeconds };
    }
    if (outcome.status === "interrupted") {
      if (definition.onInterrupted === "resume") {
        // The ledger still says started: whoever receives the message next resumes it.
        log.warn("command interrupted by agent stop; it resumes on redelivery");
        await this.#emit("progress", envelope.id, { node: this.#options.node, commandType: envelope.type, message: "interrupted by agent stop; resumes on redelivery" }).catch(
          () => undefined,
        );
        return { action: "retry", retryAfterSeconds: 0 };
      }
      outcome = { status: "failed", error: "interrupted by agent stop", code: "INTERRUPTED" };
    }
    await this.#finish(envelope, message, log, outcome, durationMs, outcome.status === "failed" && outcome.code === "INTERRUPTED");
    if (outcome.status === "done" && outcome.then === "decommission") {
      // Settle this message first (the consumer deletes it after we return), then stop.
      setImmediate(() => void (this.#closing ??= this.#close("decommissioned")));
    }
    return { action: "delete" };
  }

  /**
   * A verified command that expired after this node had started it (the agent died and the
   * message came back late) is reported failed, not merely refused: its issuer must hear.
   */
  async #refused(refusal: Refusal, message: ReceivedMessage): Promise<Disposition> {
    const envelope = refusal.envelope;
    if (refusal.reason === "expired" && envelope && !this.#running.has(envelope.id)) {
      const seen = await this.#ledger.get(envelope.id);
      if (seen?.state === "started" && seen.sqsMessageId === message.sqsMessageId) {
        const log = this.#log.child({ commandId: envelope.id, commandType: envelope.type, issuer: envelope.issuer });
        log.warn("command was interrupted and expired before it could resume; reporting it failed");
        await this.#finish(envelope, message, log, { status: "failed", error: "interrupted, and expired before it could resume", code: "INTERRUPTED" }, 0, true);
        return { action: "dead-letter", reason: "expired", detail: "interrupted, and expired before it could resume" };
      }
    }
    return this.#refuse(refusal, message);
  }

  /** At start: commands an earlier run started whose messages can no longer come back are reported failed. */
  async #reportAbandoned(): Promise<void> {
    const horizon = this.#deps.clock.now().getTime() - 60_000;
    for (const entry of await this.#ledger.entries()) {
      if (entry.state !== "started" || entry.bootId === this.#bootId || Date.parse(entry.expiresAt) > horizon) continue;
      const payload = { node: this.#options.node, commandType: entry.type, error: "interrupted by an agent stop, and expired before it was delivered again", code: "INTERRUPTED", interrupted: true };
      await this.#ledger.put({ ...entry, state: "failed", updatedAt: this.#deps.clock.now().toISOString(), outcome: { event: "failed", payload } });
      await this.#emit("failed", entry.id, payload).catch((error: unknown) => this.#log.warn({ err: error }, "could not report an abandoned command"));
      this.#log.warn({ commandId: entry.id, commandType: entry.type }, "reported an interrupted command that expired as failed");
    }
  }

  async #finish(
    envelope: Envelope,
    message: ReceivedMessage,
    log: Logger,
    outcome: Extract<CommandOutcome, { status: "done" | "failed" }>,
    durationMs: number,
    interrupted: boolean,
  ): Promise<void> {
    const node = this.#options.node;
    const terminal: LedgerEntry["outcome"] =
      outcome.status === "done"
        ? { event: "done", payload: { node, commandType: envelope.type, durationMs, result: outcome.result } }
        : { event: "failed", payload: { node, commandType: envelope.type, error: outcome.error, code: outcome.code, ...(interrupted ? { interrupted } : {}) } };
    const entry = { ...this.#entry(envelope, message, outcome.status), outcome: terminal };
    await this.#ledger.put(entry);
    if (outcome.status === "done") log.info({ durationMs }, "command done");
    else log.warn({ durationMs, error: outcome.error, code: outcome.code }, "command failed");
    await this.#emitTerminal(entry, envelope, log);
  }

  async #emitTerminal(entry: LedgerEntry, envelope: Envelope, log: Logger): Promise<void> {
    const event = entry.outcome?.["event"];
    if (event !== "done" && event !== "failed") return;
    const payload = eventSchemas[event].parse(entry.outcome?.["payload"]);
    await this.#emit(event, envelope.id, payload).catch((error: unknown) => log.error({ err: error }, "could not publish the command's result"));
  }

  async #refuse(refusal: Refusal, message: ReceivedMessage): Promise<Disposition> {
    const { node } = this.#options;
    const { envelope: _envelope, ...logged } = refusal;
    this.#log.warn({ ...logged, sqsMessageId: message.sqsMessageId }, `refused message: ${refusal.reason}`);
    // Only a verified command id goes in the ledger: a forged one could block the real command later.
    if (refusal.verified && refusal.messageId && refusal.reason !== "replayed") {
      await this.#ledger
        .put({ ...this.#entryFor(refusal.messageId, refusal.type ?? "unknown", message, "refused"), expiresAt: new Date(this.#deps.clock.now().getTime() + 3600_000).toISOString() })
        .catch(() => undefined);
    }
    const { reason, detail, messageId, type, issuer, verified } = refusal;
    // The refusal answers the command's issuer only when the command is verified and not a copy
    // of one already taken: a replay (or SNS duplicate) must not mark the real command refused.
    // Events about a command carry the command's id as their correlation, as acks and results do.
    const correlation = verified && reason !== "replayed" && messageId ? messageId : message.sqsMessageId;
    await this.#emit("refused", correlation, {
      node,
      reason,
      detail,
      verified,
      ...(messageId ? { messageId } : {}),
      ...(type ? { type } : {}),
      ...(issuer ? { issuer } : {}),
    }).catch((error: unknown) => this.#log.error({ err: error }, "could not publish refusal"));
    return { action: "dead-letter", reason, detail };
  }

  #entry(envelope: Envelope, message: ReceivedMessage, state: LedgerEntry["state"]): LedgerEntry {
    return { ...this.#entryFor(envelope.id, envelope.type, message, state), expiresAt: envelope.expiresAt };
  }

  #entryFor(id: string, type: string, message: ReceivedMessage, state: LedgerEntry["state"]): LedgerEntry {
    const now = this.#deps.clock.now().toISOString();
    return { id, type, state, sqsMessageId: message.sqsMessageId, bootId: this.#bootId, expiresAt: now, updatedAt: now };
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
