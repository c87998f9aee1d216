import {
  ChangeMessageVisibilityCommand,
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type Message,
} from "@aws-sdk/client-sqs";
import type { Logger } from "@bosun/core";
import type { AwsClients } from "./clients.ts";

export interface ReceivedMessage {
  sqsMessageId: string;
  body: string;
  /** How many times SQS has handed this message out, this time included. */
  receiveCount: number;
  attributes: Record<string, string>;
}

/**
 * What to do with a message once handled: delete it, leave it for SQS to deliver again
 * after `retryAfterSeconds`, or move it to the dead-letter queue with a reason.
 */
export type Disposition =
  | { action: "delete" }
  | { action: "retry"; retryAfterSeconds: number }
  | { action: "dead-letter"; reason: string; detail: string };

export type MessageHandler = (message: ReceivedMessage, signal: AbortSignal) => Promise<Disposition>;

export interface ConsumerOptions {
  queueUrl: string;
  dlqUrl: string;
  concurrency: number;
  visibilityTimeoutSeconds: number;
  waitTimeSeconds?: number;
  /**
   * Remembers the messages moved to the dead-letter queue, durably: when the delete after the
   * move fails, SQS delivers the message again, and it must not be dead-lettered twice.
   */
  deadLettered?: { has(sqsMessageId: string): Promise<boolean>; add(sqsMessageId: string): Promise<void> };
  /**
   * Deletes gathered into one DeleteMessageBatch (up to ten, or after this many ms): for a
   * consumer of many small messages (the coordinator's events), half its SQS requests.
   */
  batchDeletesMs?: number;
}

type InFlight = { receiptHandle: string; done: Promise<void>; abort: AbortController };

/**
 * Long-polls one queue and runs up to `concurrency` handlers at once. While a handler runs,
 * its message's visibility is extended, so work longer than the queue's timeout is not
 * handed to anyone else.
 */
export class QueueConsumer {
  readonly #clients: AwsClients;
  readonly #log: Logger;
  readonly #options: ConsumerOptions;
  readonly #inFlight = new Map<string, InFlight>();
  #deletes: { receiptHandle: string; done: (error?: unknown) => void }[] = [];
  #deleteTimer: NodeJS.Timeout | undefined;
  #polling: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #slotFreed: (() => void) | undefined;

  constructor(deps: { clients: AwsClients; logger: Logger }, options: ConsumerOptions) {
    this.#clients = deps.clients;
    this.#log = deps.logger;
    this.#options = options;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  start(handler: MessageHandler): void {
    if (this.#loop) throw new Error("consumer already started");
    this.#polling = new AbortController();
    this.#loop = this.#receiveLoop(handler, this.#polling.signal);
  }

  /** Stops receiving; in-flight handlers go on. */
  async stopReceiving(): Promise<void> {
    this.#polling?.abort();
    this.#slotFreed?.();
    await this.#loop;
  }

  /**
   * Waits up to `deadlineMs` for in-flight handlers; then aborts their signals so they
   * checkpoint, and gives them `checkpointMs` more. A handler that still has not returned is
   * left behind: its message reappears after the visibility timeout and the ledger says it
   * was started. Returns how many had to be aborted.
   */
  async drain(deadlineMs: number, checkpointMs = 10_000): Promise<number> {
    const all = () => Promise.allSettled([...this.#inFlight.values()].map((f) => f.done));
    let timer: NodeJS.Timeout | undefined;
    const expired = await Promise.race([
      all().then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), deadlineMs))),
    ]);
    clearTimeout(timer);
    if (!expired) return 0;
    const aborted = this.#inFlight.size;
    for (const flight of this.#inFlight.values()) flight.abort.abort(new Error("agent is stopping"));
    let giveUp: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise<void>((resolve) => (giveUp = setTimeout(resolve, checkpointMs)))]);
    clearTimeout(giveUp);
    if (this.#inFlight.size > 0) this.#log.error({ stuck: this.#inFlight.size }, "jobs did not checkpoint in time; leaving them for redelivery");
    return aborted;
  }

  async #receiveLoop(handler: MessageHandler, signal: AbortSignal): Promise<void> {
    const { concurrency, queueUrl } = this.#options;
    let failures = 0;
    while (!signal.aborted) {
      const free = concurrency - this.#inFlight.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => (this.#slotFreed = resolve));
        continue;
      }
      let messages: Message[];
      try {
        const out = await this.#clients.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: queueUrl,
            MaxNumberOfMessages: Math.min(10, free),
            WaitTimeSeconds: this.#options.waitTimeSeconds ?? 20,
            MessageSystemAttributeNames: ["ApproximateReceiveCount"],
            MessageAttributeNames: ["All"],
          }),
          { abortSignal: signal },
        );
        messages = out.Messages ?? [];
        failures = 0;
      } catch (error) {
        if (signal.aborted) break;
        failures += 1;
        const backoff = Math.min(30_000, 250 * 2 ** Math.min(failures, 7));
        this.#log.warn({ err: error, backoffMs: backoff }, "receive from queue failed; retrying");
        await abortableDelay(backoff, signal);
        continue;
      }
      for (const message of messages) this.#dispatch(message, handler);
    }
  }

  #dispatch(message: Message, handler: MessageHandler): void {
    const sqsMessageId = message.MessageId!;
    const existing = this.#inFlight.get(sqsMessageId);
    if (existing) {
      // Visibility lapsed (a stall, a paused process) and SQS handed it out again: keep one run, newest handle.
      existing.receiptHandle = message.ReceiptHandle!;
      this.#log.warn({ sqsMessageId }, "message redelivered while still being handled; keeping the running job");
      return;
    }
    const received: ReceivedMessage = {
      sqsMessageId,
      body: message.Body ?? "",
      receiveCount: Number(message.Attributes?.ApproximateReceiveCount ?? "1"),
      attributes: Object.fromEntries(
        Object.entries(message.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue ?? ""]),
      ),
    };
    const abort = new AbortController();
    const flight: InFlight = { receiptHandle: message.ReceiptHandle!, abort, done: Promise.resolve() };
    this.#inFlight.set(sqsMessageId, flight);
    flight.done = this.#run(received, flight, handler).finally(() => {
      this.#inFlight.delete(sqsMessageId);
      this.#slotFreed?.();
    });
  }

  async #run(message: ReceivedMessage, flight: InFlight, handler: MessageHandler): Promise<void> {
    const { visibilityTimeoutSeconds, queueUrl } = this.#options;
    const every = Math.max(1000, (visibilityTimeoutSeconds * 1000) / 3);
    const heartbeat = setInterval(() => {
      this.#clients.sqs
        .send(new ChangeMessageVisibilityCommand({ QueueUrl: queueUrl, ReceiptHandle: flight.receiptHandle, VisibilityTimeout: visibilityTimeoutSeconds }))
        .catch((error: unknown) => this.#log.warn({ err: error, sqsMessageId: message.sqsMessageId }, "could not extend message visibility"));
    }, every);
    let disposition: Disposition;
    try {
      if (await this.#options.deadLettered?.has(message.sqsMessageId)) {
        // Moved to the dead-letter queue before; only the delete failed. Finish the move.
        this.#log.warn({ sqsMessageId: message.sqsMessageId }, "message was dead-lettered before; deleting it");
        disposition = { action: "delete" };
      } else disposition = await handler(message, flight.abort.signal);
    } catch (error) {
      // A bug in a handler: leave the message for redelivery (and, after maxReceiveCount, the DLQ).
      this.#log.error({ err: error, sqsMessageId: message.sqsMessageId }, "message handler threw");
      disposition = { action: "retry", retryAfterSeconds: 30 };
    } finally {
      clearInterval(heartbeat);
    }
    try {
      await this.#settle(message, flight.receiptHandle, disposition);
    } catch (error) {
      this.#log.error({ err: error, sqsMessageId: message.sqsMessageId, disposition: disposition.action }, "could not settle message");
    }
  }

  /** Queues a delete for the next DeleteMessageBatch; resolves once that batch has deleted it. */
  #batchDelete(receiptHandle: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#deletes.push({ receiptHandle, done: (error) => (error ? reject(error) : resolve()) });
      if (this.#deletes.length >= 10) void this.#flushDeletes();
      else this.#deleteTimer ??= setTimeout(() => void this.#flushDeletes(), this.#options.batchDeletesMs);
    });
  }

  async #flushDeletes(): Promise<void> {
    clearTimeout(this.#deleteTimer);
    this.#deleteTimer = undefined;
    const batch = this.#deletes.splice(0, 10);
    if (batch.length === 0) return;
    try {
      const out = await this.#clients.sqs.send(
        new DeleteMessageBatchCommand({ QueueUrl: this.#options.queueUrl, Entries: batch.map((d, i) => ({ Id: String(i), ReceiptHandle: d.receiptHandle })) }),
      );
      const failed = new Map((out.Failed ?? []).map((f) => [f.Id, f]));
      batch.forEach((d, i) => d.done(failed.has(String(i)) ? new Error(`delete failed: ${failed.get(String(i))?.Message ?? "unknown"}`) : undefined));
    } catch (error) {
      for (const d of batch) d.done(error);
    }
    if (this.#deletes.length > 0) void this.#flushDeletes();
  }

  async #settle(message: ReceivedMessage, receiptHandle: string, disposition: Disposition): Promise<void> {
    const { queueUrl, dlqUrl } = this.#options;
    switch (disposition.action) {
      case "delete":
        if (this.#options.batchDeletesMs !== undefined) return this.#batchDelete(receiptHandle);
        await this.#clients.sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: receiptHandle }));
        return;
      case "retry":
        await this.#clients.sqs.send(
          new ChangeMessageVisibilityCommand({ QueueUrl: queueUrl, ReceiptHandle: receiptHandle, VisibilityTimeout: disposition.retryAfterSeconds }),
        );
        return;
      case "dead-letter":
        await this.#clients.sqs.send(
          new SendMessageCommand({
            QueueUrl: dlqUrl,
            MessageBody: message.body === "" ? "(empty body)" : message.body,
            MessageAttributes: {
              "bosun.reason": { DataType: "String", StringValue: disposition.reason },
              "bosun.detail": { DataType: "String", StringValue: disposition.detail.slice(0, 1024) || "-" },
              "bosun.sqsMessageId": { DataType: "String", StringValue: message.sqsMessageId },
            },
          }),
        );
        await this.#options.deadLettered?.add(message.sqsMessageId);
        await this.#clients.sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: receiptHandle }));
        return;
    }
  }
}

export function abortableDelay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Waits until the wall clock reads `at` (ms since the epoch) or the signal aborts. Timers may
 * fire a millisecond early against Date.now(), so it waits again until the moment has truly come.
 */
export async function untilWallClock(at: number, signal?: AbortSignal, now: () => number = Date.now): Promise<void> {
  for (let left = at - now(); left > 0 && !signal?.aborted; left = at - now()) await abortableDelay(left, signal);
}
