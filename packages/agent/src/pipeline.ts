import {
  errorMessage,
  eventSchemas,
  parseMessage,
  targetsNode,
  type Clock,
  type Envelope,
  type EventPayload,
  type EventType,
  type Logger,
  type NodeRef,
  type Refusal,
  type Settings,
  type TrustStore,
} from "@bosun/core";
import type { Disposition, ReceivedMessage } from "@bosun/aws";
import type { Ledger, LedgerEntry } from "./ledger.ts";
import type { CommandDefinition, CommandOutcome } from "./command.ts";
import type { RoleServices } from "./role.ts";

/** Where the pipeline reports acks, progress, results and refusals: the bus, or a spy in tests. */
export interface EventSink {
  /** `result`: the event ends a command on this node; it is also kept where the command's issuer finds it. */
  emit<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>, options?: { result?: boolean }): Promise<void>;
}

export interface PipelineDeps {
  ledger: Ledger;
  events: EventSink;
  clock: Clock;
  trust: TrustStore;
  logger: Logger;
  /** Handed to every handler. */
  services: RoleServices;
}

export interface PipelineOptions {
  node: NodeRef;
  settings: Settings;
  commands: ReadonlyMap<string, CommandDefinition<never>>;
  /** This run of the agent: a `started` ledger entry from another run was interrupted. */
  bootId: string;
  /** A command finished asking the agent to leave the fleet (decommission). */
  onDecommission?: () => void;
}

/** One delivery of a checked command, as it travels through the pipeline. */
interface Delivery {
  message: ReceivedMessage;
  envelope: Envelope;
  payload: unknown;
  definition: CommandDefinition<never>;
  log: Logger;
  signal: AbortSignal;
}

type Finished = Extract<CommandOutcome, { status: "done" | "failed" }>;

/**
 * The agent's message path, in four steps: check (signature, permission, lifetime, type,
 * payload, target), dedupe (claim the command in this process and in the ledger), run the
 * handler, acknowledge (record the outcome, report it, settle the message).
 */
export class MessagePipeline {
  readonly #deps: PipelineDeps;
  readonly #options: PipelineOptions;
  readonly #log: Logger;
  /** Commands being handled in this process right now (lower-case id), with the SQS message handling each. */
  readonly #claims = new Map<string, string>();

  constructor(deps: PipelineDeps, options: PipelineOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#log = deps.logger;
  }

  async handle(message: ReceivedMessage, signal: AbortSignal): Promise<Disposition> {
    const checked = this.#check(message);
    if (!checked.ok) return this.#refused(checked.error, message);
    const { envelope } = checked.value;
    // Claimed before the first await: a copy delivered at the same moment finds the claim.
    const key = envelope.id.toLowerCase();
    const delivery: Delivery = {
      ...checked.value,
      message,
      signal,
      log: this.#log.child({ commandId: envelope.id, commandType: envelope.type, issuer: envelope.issuer }),
    };
    const holder = this.#claims.get(key);
    if (holder !== undefined) return this.#copyOfClaimed(delivery, holder);
    this.#claims.set(key, message.sqsMessageId);
    try {
      const decision = await this.#dedupe(delivery);
      if (decision.action !== "run") return decision.disposition;
      return await this.#run(delivery, decision.resumed);
    } finally {
      this.#claims.delete(key);
    }
  }

  /** At start: commands an earlier run started whose messages can no longer come back are reported failed. */
  async reportAbandoned(): Promise<void> {
    const horizon = this.#deps.clock.now().getTime() - 60_000;
    for (const entry of await this.#deps.ledger.entries()) {
      if (entry.state !== "started" || entry.bootId === this.#options.bootId || Date.parse(entry.expiresAt) > horizon) continue;
      const payload = { node: this.#options.node, commandType: entry.type, error: "interrupted by an agent stop, and expired before it was delivered again", code: "INTERRUPTED", interrupted: true };
      await this.#deps.ledger.put({ ...entry, state: "failed", updatedAt: this.#deps.clock.now().toISOString(), outcome: { event: "failed", payload } });
      await this.#deps.events.emit("failed", entry.id, payload).catch((error: unknown) => this.#log.warn({ err: error }, "could not report an abandoned command"));
      this.#log.warn({ commandId: entry.id, commandType: entry.type }, "reported an interrupted command that expired as failed");
    }
  }

  /** Signature, permission, lifetime, type and payload (core's parseMessage), then the target. */
  #check(message: ReceivedMessage): { ok: true; value: { envelope: Envelope; payload: unknown; definition: CommandDefinition<never> } } | { ok: false; error: Refusal } {
    const { settings, node, commands } = this.#options;
    const parsed = parseMessage(message.body, {
      trust: this.#deps.trust,
      now: this.#deps.clock.now(),
      maxBytes: settings.maxMessageBytes,
      schemaFor: (kind, type) => (kind === "command" ? commands.get(type)?.payload : undefined),
    });
    if (!parsed.ok) return parsed;
    const { envelope, payload } = parsed.value;
    if (!targetsNode(envelope.target, node.id, node.roles)) {
      return { ok: false, error: { ...verified(envelope), reason: "wrong-target", detail: "this node is not among the command's targets" } };
    }
    return { ok: true, value: { envelope, payload, definition: commands.get(envelope.type)! } };
  }

  /** Another delivery of a command this process is handling right now. */
  async #copyOfClaimed(d: Delivery, holder: string): Promise<Disposition> {
    if (holder === d.message.sqsMessageId) {
      d.log.warn("command is already running in this agent; leaving the redelivery for later");
      return { action: "retry", retryAfterSeconds: this.#options.settings.visibilityTimeoutSeconds };
    }
    return this.#copy(d, "it is being handled by another delivery");
  }

  /**
   * A second SQS message carrying a command already taken: SNS delivers at least once, and a
   * signed command republished within its lifetime looks exactly the same. It has no effect and
   * answers nothing (its issuer hears from the delivery that runs the command); it is deleted,
   * not dead-lettered: it is not bad input.
   */
  #copy(d: Delivery, why: string): Disposition {
    d.log.info({ sqsMessageId: d.message.sqsMessageId }, `a copy of a command already taken (${why}): no effect`);
    return { action: "delete" };
  }

  /**
   * What the ledger says of this command: new (run it), finished (say so again, no effect),
   * a copy from another message (refuse it), or started by a run that died (resume it, or report it failed).
   */
  async #dedupe(d: Delivery): Promise<{ action: "run"; resumed: boolean } | { action: "settle"; disposition: Disposition }> {
    const seen = await this.#deps.ledger.get(d.envelope.id);
    if (!seen) return { action: "run", resumed: false };
    if (seen.sqsMessageId !== d.message.sqsMessageId) return { action: "settle", disposition: this.#copy(d, `it was received before and is ${seen.state}`) };
    if (seen.state !== "started") {
      // The same delivery again: the effect happened; say so again in case the first report was lost.
      d.log.info({ state: seen.state }, "duplicate delivery of a finished command; no effect");
      if (seen.outcome) await this.#emitTerminal(seen, d);
      return { action: "settle", disposition: { action: "delete" } };
    }
    if (d.definition.onInterrupted === "fail") {
      d.log.warn("command was interrupted before it finished and cannot be resumed; reporting it failed");
      await this.#finish(d, { status: "failed", error: "interrupted before it finished", code: "INTERRUPTED" }, 0, true);
      return { action: "settle", disposition: { action: "delete" } };
    }
    d.log.warn({ sameRun: seen.bootId === this.#options.bootId }, "resuming a command that was started and did not finish");
    return { action: "run", resumed: true };
  }

  async #run(d: Delivery, resumed: boolean): Promise<Disposition> {
    const { settings, node } = this.#options;
    const { envelope, message, log } = d;
    const started = this.#entry(d, "started");
    if (resumed) await this.#deps.ledger.put(started);
    else if (!(await this.#deps.ledger.create(started))) {
      // Another process on this node's ledger claimed it between our read and our write.
      return this.#copy(d, "another run of the agent claimed it");
    }
    // The ack goes out while the handler starts: waiting for it would delay every node's work
    // (half the activation spread across 50 nodes). It is awaited before the result, so issuers see ack first.
    const acked = this.#deps.events
      .emit("ack", envelope.id, { node, commandType: envelope.type, receiveCount: message.receiveCount, resumed })
      .catch((error: unknown) => log.warn({ err: error }, "could not publish the ack; going on with the command"));
    log.info({ receiveCount: message.receiveCount, resumed }, "command accepted");

    const began = performance.now();
    let outcome: CommandOutcome;
    try {
      outcome = await d.definition.handle({
        payload: d.payload as never,
        envelope,
        node,
        signal: d.signal,
        log,
        stateDir: settings.stateDir,
        settings,
        resumed,
        services: this.#deps.services,
        progress: (text, fraction) =>
          this.#deps.events
            .emit("progress", envelope.id, { node, commandType: envelope.type, message: text, ...(fraction === undefined ? {} : { fraction }) })
            .catch((error: unknown) => log.warn({ err: error }, "could not publish progress")),
      });
    } catch (error) {
      log.error({ err: error }, "command handler threw");
      outcome = { status: "failed", error: errorMessage(error), code: "HANDLER_ERROR" };
    }
    await acked;
    return this.#acknowledge(d, outcome, Math.round(performance.now() - began));
  }

  /** Records the outcome, reports it, and says what to do with the message. */
  async #acknowledge(d: Delivery, outcome: CommandOutcome, durationMs: number): Promise<Disposition> {
    const { envelope, log } = d;
    if (outcome.status === "retry") {
      log.info({ reason: outcome.reason, afterSeconds: outcome.afterSeconds }, "command will be retried");
      // Not started as far as the next delivery is concerned: it runs afresh.
      await this.#deps.ledger.forget(envelope.id);
      return { action: "retry", retryAfterSeconds: outcome.afterSeconds };
    }
    if (outcome.status === "interrupted") {
      if (d.definition.onInterrupted === "resume") {
        // The ledger still says started: whoever receives the message next resumes it.
        log.warn("command interrupted by agent stop; it resumes on redelivery");
        await this.#deps.events
          .emit("progress", envelope.id, { node: this.#options.node, commandType: envelope.type, message: "interrupted by agent stop; resumes on redelivery" })
          .catch(() => undefined);
        return { action: "retry", retryAfterSeconds: 0 };
      }
      outcome = { status: "failed", error: "interrupted by agent stop", code: "INTERRUPTED" };
    }
    await this.#finish(d, outcome, durationMs, outcome.status === "failed" && outcome.code === "INTERRUPTED");
    if (outcome.status === "done" && outcome.then === "decommission") {
      // Settle this message first (the consumer deletes it after we return), then stop.
      setImmediate(() => this.#options.onDecommission?.());
    }
    return { action: "delete" };
  }

  /**
   * A verified command that expired after this node had started it (the agent died and the
   * message came back late) is reported failed, not merely refused: its issuer must hear.
   */
  async #refused(refusal: Refusal, message: ReceivedMessage): Promise<Disposition> {
    const envelope = refusal.envelope;
    if (refusal.reason === "expired" && envelope && !this.#claims.has(envelope.id.toLowerCase())) {
      const seen = await this.#deps.ledger.get(envelope.id);
      const definition = this.#options.commands.get(envelope.type);
      if (seen?.state === "started" && seen.sqsMessageId === message.sqsMessageId && definition) {
        const log = this.#log.child({ commandId: envelope.id, commandType: envelope.type, issuer: envelope.issuer });
        log.warn("command was interrupted and expired before it could resume; reporting it failed");
        const d: Delivery = { message, envelope, payload: envelope.payload, definition, log, signal: AbortSignal.abort() };
        await this.#finish(d, { status: "failed", error: "interrupted, and expired before it could resume", code: "INTERRUPTED" }, 0, true);
        return { action: "dead-letter", reason: "expired", detail: "interrupted, and expired before it could resume" };
      }
    }
    return this.#refuse(refusal, message);
  }

  async #finish(d: Delivery, outcome: Finished, durationMs: number, interrupted: boolean): Promise<void> {
    const { node } = this.#options;
    const { envelope, log } = d;
    const terminal: LedgerEntry["outcome"] =
      outcome.status === "done"
        ? { event: "done", payload: { node, commandType: envelope.type, durationMs, result: outcome.result } }
        : { event: "failed", payload: { node, commandType: envelope.type, error: outcome.error, code: outcome.code, ...(interrupted ? { interrupted } : {}) } };
    const entry = { ...this.#entry(d, outcome.status), outcome: terminal };
    await this.#deps.ledger.put(entry);
    if (outcome.status === "done") log.info({ durationMs }, "command done");
    else log.warn({ durationMs, error: outcome.error, code: outcome.code }, "command failed");
    await this.#emitTerminal(entry, d);
  }

  async #emitTerminal(entry: LedgerEntry, d: Delivery): Promise<void> {
    const event = entry.outcome?.["event"];
    if (event !== "done" && event !== "failed") return;
    const payload = eventSchemas[event].parse(entry.outcome?.["payload"]);
    await this.#deps.events.emit(event, d.envelope.id, payload, { result: true }).catch((error: unknown) => d.log.error({ err: error }, "could not publish the command's result"));
  }

  async #refuse(refusal: Refusal, message: ReceivedMessage): Promise<Disposition> {
    const { node } = this.#options;
    const { envelope: _envelope, ...logged } = refusal;
    this.#log.warn({ ...logged, sqsMessageId: message.sqsMessageId }, `refused message: ${refusal.reason}`);
    // Only a verified command id goes in the ledger, and only where none is: a forged id could
    // block the real command later, and a refused copy must not overwrite the real one's entry.
    if (refusal.verified && refusal.messageId) {
      const now = this.#deps.clock.now();
      await this.#deps.ledger
        .create({ ...this.#entryFor(refusal.messageId, refusal.type ?? "unknown", message, "refused"), expiresAt: new Date(now.getTime() + 3600_000).toISOString() })
        .catch(() => undefined);
    }
    const { reason, detail, messageId, type, issuer, verified: isVerified } = refusal;
    // The refusal answers the command's issuer only when the command is verified: an unverifiable
    // message could claim any id. Events about a command carry its id as their correlation.
    const answersCommand = isVerified && messageId !== undefined;
    const correlation = answersCommand ? messageId : message.sqsMessageId;
    await this.#deps.events
      .emit("refused", correlation, {
        node,
        reason,
        detail,
        verified: isVerified,
        ...(messageId ? { messageId } : {}),
        ...(type ? { type } : {}),
        ...(issuer ? { issuer } : {}),
      }, { result: answersCommand })
      .catch((error: unknown) => this.#log.error({ err: error }, "could not publish refusal"));
    return { action: "dead-letter", reason, detail };
  }

  #entry(d: Delivery, state: LedgerEntry["state"]): LedgerEntry {
    return { ...this.#entryFor(d.envelope.id, d.envelope.type, d.message, state), expiresAt: d.envelope.expiresAt };
  }

  #entryFor(id: string, type: string, message: ReceivedMessage, state: LedgerEntry["state"]): LedgerEntry {
    const now = this.#deps.clock.now().toISOString();
    return { id, type, state, sqsMessageId: message.sqsMessageId, bootId: this.#options.bootId, expiresAt: now, updatedAt: now };
  }
}

/** What a verified envelope says of itself, for a refusal. */
function verified(envelope: Envelope): Omit<Refusal, "reason" | "detail"> {
  return { messageId: envelope.id, type: envelope.type, issuer: envelope.issuer, correlationId: envelope.correlationId, envelope, verified: true };
}
