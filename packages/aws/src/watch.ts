import { randomBytes } from "node:crypto";
import { DeleteMessageBatchCommand, DeleteQueueCommand, GetQueueAttributesCommand, ReceiveMessageCommand, TagQueueCommand } from "@aws-sdk/client-sqs";
import { UnsubscribeCommand } from "@aws-sdk/client-sns";
import type { Envelope, Refusal } from "@bosun/core";
import type { AwsClients } from "./clients.ts";
import { names } from "./names.ts";
import { ensureSubscribedQueue, queuesByPrefix, removeQueue, subscriptionOf, type QueueRef } from "./topology.ts";
import type { EventVerifier } from "./verify.ts";

export type WatchItem = { ok: true; envelope: Envelope } | { ok: false; refusal: Refusal };

/** The tag that says until when a watch queue is wanted; past it, anyone may remove the queue. */
export const EXPIRES_TAG = "bosun:expires";

/**
 * A temporary queue on the bus that sees events (all, or one command's), for a person following
 * the fleet (`bosun events`) and for the live view of a waiting command. On AWS a new
 * subscription and its filter may take a while to deliver everything, so nothing that must not
 * be missed comes only this way: a command's results are also kept in S3 (see CommandFollower).
 * Each queue is tagged with the time it expires, so a sweep removes those whose CLI was killed.
 */
export class EventWatcher {
  readonly #clients: AwsClients;
  readonly #verifier: EventVerifier;
  readonly #correlationId: string | undefined;
  readonly #leaseMs: number;
  #queue: QueueRef | undefined;
  #renewedAt = Date.now();

  private constructor(deps: { clients: AwsClients; verifier: EventVerifier }, correlationId: string | undefined, leaseMs: number) {
    this.#clients = deps.clients;
    this.#verifier = deps.verifier;
    this.#correlationId = correlationId;
    this.#leaseMs = leaseMs;
  }

  /** `leaseSeconds`: how long the queue is wanted; a watcher still reading renews it as it goes. */
  static async open(
    deps: { clients: AwsClients; verifier: EventVerifier },
    options: { cluster: string; topicArn: string; correlationId?: string; leaseSeconds: number },
  ): Promise<EventWatcher> {
    const watcher = new EventWatcher(deps, options.correlationId, options.leaseSeconds * 1000);
    const expiresAt = new Date(Date.now() + options.leaseSeconds * 1000);
    const filter: Record<string, unknown> = { kind: ["event"] };
    if (options.correlationId) filter["correlation"] = [options.correlationId];
    const name = names.watchQueue(options.cluster, randomBytes(6).toString("hex"));
    watcher.#queue = await ensureSubscribedQueue(deps.clients, options.topicArn, name, filter, {
      visibilityTimeoutSeconds: 30,
      tags: { "bosun:cluster": options.cluster, "bosun:kind": "watch", [EXPIRES_TAG]: expiresAt.toISOString() },
    });
    return watcher;
  }

  /**
   * Yields verified events until the signal aborts; events failing verification are yielded as
   * refusals. With a correlation id, events about other commands are dropped whatever the filter
   * let through (a filter can take minutes to take effect on AWS).
   */
  async *events(signal: AbortSignal): AsyncGenerator<WatchItem> {
    const queue = this.#queue!;
    while (!signal.aborted) {
      if (Date.now() - this.#renewedAt > this.#leaseMs / 2) await this.#renew(queue);
      let out;
      try {
        out = await this.#clients.sqs.send(new ReceiveMessageCommand({ QueueUrl: queue.url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }), { abortSignal: signal });
      } catch (error) {
        if (signal.aborted) return;
        throw error;
      }
      const messages = out.Messages ?? [];
      // Delete while the events are handed on, not before: the caller sees them one round trip sooner.
      const deleted = messages.length
        ? this.#clients.sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queue.url, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }))
        : undefined;
      deleted?.catch(() => undefined);
      for (const message of messages) {
        const item = await verifyItem(this.#verifier, message.Body ?? "");
        if (item.ok && this.#correlationId !== undefined && item.envelope.correlationId !== this.#correlationId) continue;
        yield item;
      }
      await deleted;
    }
  }

  /** Pushes the queue's expiry on while it is read (`bosun events` may run for days). */
  async #renew(queue: QueueRef): Promise<void> {
    this.#renewedAt = Date.now();
    const expiresAt = new Date(this.#renewedAt + this.#leaseMs).toISOString();
    await this.#clients.sqs.send(new TagQueueCommand({ QueueUrl: queue.url, Tags: { [EXPIRES_TAG]: expiresAt } }));
  }

  async close(): Promise<void> {
    const queue = this.#queue;
    this.#queue = undefined;
    if (queue) await removeQueue(this.#clients, queue);
  }
}

/** One message checked; a failure to read a node's keys is a refusal here, not an error that ends the watch. */
export async function verifyItem(verifier: EventVerifier, body: string): Promise<WatchItem> {
  try {
    const parsed = await verifier.verify(body);
    return parsed.ok ? { ok: true, envelope: parsed.value.envelope } : { ok: false, refusal: parsed.error };
  } catch (error) {
    return { ok: false, refusal: { reason: "unknown-key", verified: false, detail: `could not read the sender's keys: ${(error as Error).message}` } };
  }
}

/**
 * Removes the watch queues of a cluster whose time has passed: a CLI killed while it waited
 * leaves its queue behind, subscribed and filling. Returns the names removed.
 */
export async function sweepWatchQueues(clients: AwsClients, options: { cluster: string; topicArn: string; now: Date }): Promise<string[]> {
  const removed: string[] = [];
  for (const queue of await queuesByPrefix(clients, names.watchQueue(options.cluster, ""))) {
    if (queue.name.endsWith("-dlq")) continue;
    const expires = Date.parse(queue.tags[EXPIRES_TAG] ?? "");
    // A queue without the tag predates it or is not ours to judge: left alone.
    if (!Number.isFinite(expires) || expires > options.now.getTime()) continue;
    const { Attributes } = await clients.sqs.send(new GetQueueAttributesCommand({ QueueUrl: queue.url, AttributeNames: ["QueueArn"] }));
    const subscription = await subscriptionOf(clients, options.topicArn, Attributes?.["QueueArn"] ?? "");
    if (subscription) await clients.sns.send(new UnsubscribeCommand({ SubscriptionArn: subscription }));
    await clients.sqs.send(new DeleteQueueCommand({ QueueUrl: queue.url }));
    const dlq = queue.url.replace(/[^/]+$/, names.deadLetter(queue.name));
    await clients.sqs.send(new DeleteQueueCommand({ QueueUrl: dlq })).catch(() => undefined);
    removed.push(queue.name);
  }
  return removed;
}
