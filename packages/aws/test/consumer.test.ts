import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { ReceiveMessageCommand, type Message } from "@aws-sdk/client-sqs";
import { QueueConsumer, type AwsClients, type Disposition, type MessageHandler } from "@bosun/aws";

type Call = { name: string; input: Record<string, unknown> };

/** An SQS queue in memory that speaks the client's `send`, recording every call. */
class FakeSqs {
  readonly calls: Call[] = [];
  readonly queued: Message[] = [];
  #waiters: (() => void)[] = [];
  failReceives = 0;
  failDeletes = 0;

  /** Queues a message; returns its receipt handle. */
  add(body: string, id = `m-${this.calls.length}-${this.queued.length}`): string {
    const receipt = `rh-${id}-${Math.random()}`;
    this.queued.push({ MessageId: id, ReceiptHandle: receipt, Body: body, Attributes: { ApproximateReceiveCount: "1" } });
    for (const wake of this.#waiters.splice(0)) wake();
    return receipt;
  }

  of(name: string): Call[] {
    return this.calls.filter((c) => c.name === name);
  }

  async send(command: { input: Record<string, unknown> }, options?: { abortSignal?: AbortSignal }): Promise<unknown> {
    const name = command.constructor.name;
    this.calls.push({ name, input: command.input });
    if (command instanceof ReceiveMessageCommand) {
      if (this.failReceives > 0) {
        this.failReceives -= 1;
        throw new Error("receive failed");
      }
      if (this.queued.length === 0) {
        // Long poll: wait for a message or the abort, as SQS holds the request open.
        await new Promise<void>((resolve) => {
          this.#waiters.push(resolve);
          options?.abortSignal?.addEventListener("abort", () => resolve(), { once: true });
        });
        if (options?.abortSignal?.aborted) throw new Error("aborted");
      }
      return { Messages: this.queued.splice(0, Number(command.input["MaxNumberOfMessages"] ?? 1)) };
    }
    if (name === "DeleteMessageCommand" && this.failDeletes > 0) {
      this.failDeletes -= 1;
      throw new Error("delete failed");
    }
    return {};
  }
}

function consumerWith(sqs: FakeSqs, options: { concurrency?: number; visibilityTimeoutSeconds?: number; deadLettered?: Set<string>; batchDeletesMs?: number } = {}): QueueConsumer {
  const clients = { sqs } as unknown as AwsClients;
  const memory = options.deadLettered;
  return new QueueConsumer(
    { clients, logger: pino({ level: "silent" }) },
    {
      queueUrl: "q",
      dlqUrl: "dlq",
      concurrency: options.concurrency ?? 4,
      visibilityTimeoutSeconds: options.visibilityTimeoutSeconds ?? 30,
      waitTimeSeconds: 1,
      ...(options.batchDeletesMs === undefined ? {} : { batchDeletesMs: options.batchDeletesMs }),
      ...(memory ? { deadLettered: { has: async (id: string) => memory.has(id), add: async (id: string) => void memory.add(id) } } : {}),
    },
  );
}

/** Waits until `check` holds, looking again whenever the event loop turns (bounded). */
async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("the queue consumer", () => {
  it("settles each message as its handler says: delete, retry later, or dead-letter with the reason", async () => {
    const sqs = new FakeSqs();
    const dispositions: Record<string, Disposition> = {
      good: { action: "delete" },
      later: { action: "retry", retryAfterSeconds: 7 },
      bad: { action: "dead-letter", reason: "malformed-json", detail: "Unexpected token" },
    };
    const consumer = consumerWith(sqs);
    consumer.start(async (message) => dispositions[message.body]!);
    for (const body of Object.keys(dispositions)) sqs.add(body, body);
    await until(() => sqs.of("DeleteMessageCommand").length === 2 && sqs.of("ChangeMessageVisibilityCommand").length === 1, "every message settled");
    await consumer.stopReceiving();
    assert.deepEqual(sqs.of("ChangeMessageVisibilityCommand").map((c) => c.input["VisibilityTimeout"]), [7]);
    const dead = sqs.of("SendMessageCommand")[0]!.input;
    assert.equal(dead["QueueUrl"], "dlq");
    assert.equal(dead["MessageBody"], "bad");
    assert.deepEqual((dead["MessageAttributes"] as Record<string, { StringValue: string }>)["bosun.reason"]?.StringValue, "malformed-json");
    assert.deepEqual(sqs.of("DeleteMessageCommand").map((c) => String(c.input["ReceiptHandle"]).split("-")[1]).sort(), ["bad", "good"]);
  });

  it("a message moved to the dead-letter queue whose delete failed is not dead-lettered again when it comes back", async () => {
    const sqs = new FakeSqs();
    sqs.failDeletes = 1;
    let handled = 0;
    const consumer = consumerWith(sqs, { deadLettered: new Set() });
    consumer.start(async () => {
      handled += 1;
      return { action: "dead-letter", reason: "malformed-json", detail: "x" };
    });
    sqs.add("bad", "once");
    await until(() => sqs.of("DeleteMessageCommand").length === 1, "the failed delete");
    // SQS hands it out again after its visibility timeout.
    sqs.add("bad", "once");
    await until(() => sqs.of("DeleteMessageCommand").length === 2, "the second delete");
    await consumer.stopReceiving();
    assert.equal(sqs.of("SendMessageCommand").length, 1, "one copy in the dead-letter queue");
    assert.equal(handled, 1, "the handler saw it once");
  });

  it("gathers deletes into batches when asked: one request for several messages", async () => {
    const sqs = new FakeSqs();
    const consumer = consumerWith(sqs, { batchDeletesMs: 50, concurrency: 10 });
    consumer.start(async () => ({ action: "delete" }));
    for (let i = 0; i < 4; i++) sqs.add(`m${i}`, `m${i}`);
    await until(() => sqs.of("DeleteMessageBatchCommand").flatMap((c) => c.input["Entries"] as unknown[]).length === 4, "four deletes");
    await consumer.stopReceiving();
    assert.equal(sqs.of("DeleteMessageCommand").length, 0);
    assert.ok(sqs.of("DeleteMessageBatchCommand").length < 4, "fewer requests than messages");
  });

  it("a handler that throws (a bug) leaves its message for redelivery", async () => {
    const sqs = new FakeSqs();
    const consumer = consumerWith(sqs);
    consumer.start(async () => {
      throw new Error("bug");
    });
    sqs.add("x");
    await until(() => sqs.of("ChangeMessageVisibilityCommand").length === 1, "the message left for later");
    await consumer.stopReceiving();
    assert.equal(sqs.of("DeleteMessageCommand").length, 0);
  });

  it("keeps a message invisible while its handler runs longer than a third of the visibility timeout", async () => {
    const sqs = new FakeSqs();
    const consumer = consumerWith(sqs, { visibilityTimeoutSeconds: 2 });
    let release!: () => void;
    consumer.start(() => new Promise((resolve) => (release = () => resolve({ action: "delete" }))));
    sqs.add("long");
    await until(() => sqs.of("ChangeMessageVisibilityCommand").length >= 2, "two extensions", 10_000);
    release();
    await until(() => sqs.of("DeleteMessageCommand").length === 1, "the delete");
    await consumer.stopReceiving();
    assert.ok(sqs.of("ChangeMessageVisibilityCommand").every((c) => c.input["VisibilityTimeout"] === 2));
  });

  it("runs at most `concurrency` handlers at once", async () => {
    const sqs = new FakeSqs();
    const consumer = consumerWith(sqs, { concurrency: 2 });
    let running = 0;
    let most = 0;
    let done = 0;
    const handler: MessageHandler = async () => {
      running += 1;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 20));
      running -= 1;
      done += 1;
      return { action: "delete" };
    };
    consumer.start(handler);
    for (let i = 0; i < 7; i++) sqs.add(`m${i}`, `m${i}`);
    await until(() => done === 7, "all seven handled");
    await consumer.stopReceiving();
    assert.equal(most, 2);
    assert.ok(sqs.of("ReceiveMessageCommand").every((c) => Number(c.input["MaxNumberOfMessages"]) <= 2), "never asks for more than it can run");
  });

  it("keeps one run of a message SQS hands out again while it is still running, and settles it with the newest receipt", async () => {
    const sqs = new FakeSqs();
    const consumer = consumerWith(sqs);
    let runs = 0;
    let release!: () => void;
    consumer.start(() => {
      runs += 1;
      return new Promise((resolve) => (release = () => resolve({ action: "delete" })));
    });
    sqs.add("x", "same");
    await until(() => runs === 1, "the first run");
    const newest = sqs.add("x", "same");
    await until(() => sqs.queued.length === 0, "the redelivery received");
    release();
    await until(() => sqs.of("DeleteMessageCommand").length === 1, "the delete");
    await consumer.stopReceiving();
    assert.equal(runs, 1);
    assert.deepEqual(sqs.of("DeleteMessageCommand").map((c) => c.input["ReceiptHandle"]), [newest]);
  });

  it("backs off and goes on when a receive fails", async () => {
    const sqs = new FakeSqs();
    sqs.failReceives = 2;
    const consumer = consumerWith(sqs);
    let handled = 0;
    consumer.start(async () => {
      handled += 1;
      return { action: "delete" };
    });
    sqs.add("after the failures");
    await until(() => handled === 1, "the message handled after two failed receives", 10_000);
    await consumer.stopReceiving();
  });

  it("on stop, waits for running handlers up to the deadline, then tells them to checkpoint", async () => {
    const sqs = new FakeSqs();
    const consumer = consumerWith(sqs);
    let aborted = false;
    consumer.start(
      (_message, signal) =>
        new Promise((resolve) =>
          signal.addEventListener("abort", () => {
            aborted = true;
            resolve({ action: "retry", retryAfterSeconds: 0 });
          }),
        ),
    );
    sqs.add("forever");
    await until(() => consumer.inFlight === 1, "the handler running");
    await consumer.stopReceiving();
    const started = Date.now();
    assert.equal(await consumer.drain(200), 1, "one handler was told to stop");
    assert.ok(aborted);
    assert.ok(Date.now() - started >= 200, "it waited for the deadline first");
    assert.equal(consumer.inFlight, 0);
  });
});
