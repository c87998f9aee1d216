import { randomBytes } from "node:crypto";
import { DeleteMessageBatchCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { eventSchemas, isEventType, parseMessage, type Envelope, type Refusal, type TrustStore } from "@bosun/core";
import type { AwsClients } from "./clients.ts";
import { names } from "./names.ts";
import { ensureSubscribedQueue, removeQueue, type QueueRef } from "./topology.ts";

export type WatchItem = { ok: true; envelope: Envelope } | { ok: false; refusal: Refusal };

/**
 * A temporary queue on the bus that sees events (all, or one command's), for issuers
 * that wait on results and for `bosun events`. Open it before publishing, close it after.
 */
export class EventWatcher {
  readonly #clients: AwsClients;
  readonly #trust: TrustStore;
  readonly #maxBytes: number;
  #queue: QueueRef | undefined;

  private constructor(deps: { clients: AwsClients; trust: TrustStore }, maxBytes: number) {
    this.#clients = deps.clients;
    this.#trust = deps.trust;
    this.#maxBytes = maxBytes;
  }

  static async open(
    deps: { clients: AwsClients; trust: TrustStore },
    options: { cluster: string; topicArn: string; correlationId?: string; maxBytes: number },
  ): Promise<EventWatcher> {
    const watcher = new EventWatcher(deps, options.maxBytes);
    const filter: Record<string, unknown> = { kind: ["event"] };
    if (options.correlationId) filter["correlation"] = [options.correlationId];
    const name = names.watchQueue(options.cluster, randomBytes(6).toString("hex"));
    watcher.#queue = await ensureSubscribedQueue(deps.clients, options.topicArn, name, filter, { visibilityTimeoutSeconds: 30 });
    return watcher;
  }

  /** Yields verified events until the signal aborts. Events failing verification are yielded as refusals. */
  async *events(signal: AbortSignal): AsyncGenerator<WatchItem> {
    const queue = this.#queue!;
    while (!signal.aborted) {
      let out;
      try {
        out = await this.#clients.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: queue.url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
          { abortSignal: signal },
        );
      } catch (error) {
        if (signal.aborted) return;
        throw error;
      }
      const messages = out.Messages ?? [];
      // Delete while the events are handed on, not before: the caller sees them one round trip sooner.
      const deleted = messages.length
        ? this.#clients.sqs.send(
            new DeleteMessageBatchCommand({ QueueUrl: queue.url, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }),
          )
        : undefined;
      deleted?.catch(() => undefined);
      for (const message of messages) {
        const parsed = parseMessage(message.Body ?? "", {
          trust: this.#trust,
          now: new Date(),
          maxBytes: this.#maxBytes,
          schemaFor: (kind, type) => (kind === "event" && isEventType(type) ? eventSchemas[type] : undefined),
        });
        yield parsed.ok ? { ok: true, envelope: parsed.value.envelope } : { ok: false, refusal: parsed.error };
      }
      await deleted;
    }
  }

  async close(): Promise<void> {
    const queue = this.#queue;
    this.#queue = undefined;
    if (queue) await removeQueue(this.#clients, queue);
  }
}
