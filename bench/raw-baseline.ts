import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { randomBytes, randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
} from "@aws-sdk/client-sqs";
import { CreateTopicCommand, PublishCommand, SubscribeCommand } from "@aws-sdk/client-sns";
import { createAwsClients, destroyAwsClients, type AwsClients } from "@bosun/aws";
import type { RawReply } from "./raw-consumer.ts";

const consumerScript = fileURLToPath(new URL("./raw-consumer.ts", import.meta.url));

/** One timed fan-out: publish until the last reply arrived, and where that last reply's time went. */
export interface FanOutRound {
  latencyMs: number;
  /** Publish until the slowest responder had the message in hand (wall clock, 1 ms resolution). */
  inboundMs: number;
  /** From then until its reply reached the waiting side. */
  outboundMs: number;
  /** First to last consumer having the message in hand (wall clocks of one machine, 1 ms resolution). */
  receiptSpreadMs: number;
}

interface Expected {
  need: number;
  from: Map<string, { reply: RawReply; at: number; wallAt: number }>;
  resolve: () => void;
}

interface Consumer {
  name: string;
  child: ChildProcess;
  exited: Promise<unknown>;
}

/**
 * The same shape as a Bosun fan-out with nothing of Bosun in it: a plain SNS topic, one SQS
 * queue per consumer process subscribed with raw delivery, and a reply topic whose queue this
 * process long-polls. Also the plainest SQS send-receive round trip on one queue.
 */
export class RawBaseline {
  readonly #clients: AwsClients;
  readonly #endpoint: string;
  readonly #prefix = `raw${randomBytes(4).toString("hex")}`;
  readonly #consumers: Consumer[] = [];
  readonly #expected = new Map<string, Expected>();
  readonly #collecting = new AbortController();
  #commandTopicArn = "";
  #replyTopicArn = "";
  #replyQueueUrl = "";
  #pingQueueUrl = "";
  #collector: Promise<void> | undefined;
  #collectorFailure: unknown;
  #closing: Promise<void> | undefined;

  private constructor(endpoint: string) {
    this.#endpoint = endpoint;
    this.#clients = createAwsClients({ endpoint, region: "us-east-1" });
  }

  static async start(endpoint: string): Promise<RawBaseline> {
    const baseline = new RawBaseline(endpoint);
    try {
      await baseline.#setUp();
    } catch (error) {
      await baseline.close().catch(() => undefined);
      throw error;
    }
    return baseline;
  }

  get consumerCount(): number {
    return this.#consumers.length;
  }

  /** Process ids of the consumers, for the caller's own bookkeeping. */
  get pids(): number[] {
    return this.#consumers.flatMap((c) => (c.child.pid === undefined ? [] : [c.child.pid]));
  }

  async #setUp(): Promise<void> {
    const sns = this.#clients.sns;
    this.#commandTopicArn = (await sns.send(new CreateTopicCommand({ Name: `${this.#prefix}-commands` }))).TopicArn!;
    this.#replyTopicArn = (await sns.send(new CreateTopicCommand({ Name: `${this.#prefix}-replies` }))).TopicArn!;
    this.#replyQueueUrl = await this.#subscribedQueue(this.#replyTopicArn, `${this.#prefix}-replies`);
    this.#pingQueueUrl = (await this.#clients.sqs.send(new CreateQueueCommand({ QueueName: `${this.#prefix}-ping` }))).QueueUrl!;
    // A failed collector shows in the next round's error rather than as an unhandled rejection.
    this.#collector = this.#collect(this.#collecting.signal).catch((error: unknown) => {
      this.#collectorFailure = error;
    });
  }

  async #subscribedQueue(topicArn: string, name: string): Promise<string> {
    const { QueueUrl } = await this.#clients.sqs.send(new CreateQueueCommand({ QueueName: name }));
    const { Attributes } = await this.#clients.sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["QueueArn"] }));
    await this.#clients.sns.send(
      new SubscribeCommand({ TopicArn: topicArn, Protocol: "sqs", Endpoint: Attributes!["QueueArn"]!, Attributes: { RawMessageDelivery: "true" } }),
    );
    return QueueUrl!;
  }

  /** Long-polls the reply queue; each reply counts the moment it is read, and is deleted after. */
  async #collect(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let out;
      try {
        out = await this.#clients.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: this.#replyQueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 20 }),
          { abortSignal: signal },
        );
      } catch (error) {
        if (signal.aborted) return;
        throw error;
      }
      const messages = out.Messages ?? [];
      const at = performance.now();
      const wallAt = Date.now();
      for (const message of messages) {
        const reply = JSON.parse(message.Body ?? "{}") as RawReply;
        const expected = this.#expected.get(reply.id);
        if (!expected || expected.from.has(reply.from)) continue;
        expected.from.set(reply.from, { reply, at, wallAt });
        if (expected.from.size === expected.need) expected.resolve();
      }
      if (messages.length > 0) {
        void this.#clients.sqs
          .send(
            new DeleteMessageBatchCommand({
              QueueUrl: this.#replyQueueUrl,
              Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })),
            }),
          )
          .catch(() => undefined);
      }
    }
  }

  /** Starts consumers (in batches, each with its own subscribed queue) until there are `count`. */
  async growTo(count: number, batchSize: number): Promise<void> {
    while (this.#consumers.length < count) {
      const first = this.#consumers.length + 1;
      const names = Array.from({ length: Math.min(batchSize, count - this.#consumers.length) }, (_, i) => `c${first + i}`);
      await Promise.all(names.map((name) => this.#startConsumer(name)));
    }
  }

  async #startConsumer(name: string): Promise<void> {
    const queueUrl = await this.#subscribedQueue(this.#commandTopicArn, `${this.#prefix}-${name}`);
    const child = spawn(process.execPath, [consumerScript, name, queueUrl, this.#replyTopicArn], {
      env: {
        PATH: process.env["PATH"],
        HOME: process.env["HOME"],
        AWS_ENDPOINT_URL: this.#endpoint,
        AWS_REGION: "us-east-1",
        AWS_ACCESS_KEY_ID: "test",
        AWS_SECRET_ACCESS_KEY: "test",
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const consumer: Consumer = { name, child, exited: once(child, "exit") };
    this.#consumers.push(consumer);
    const stderr: string[] = [];
    createInterface({ input: child.stderr! }).on("line", (line) => stderr.push(line));
    const ready = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout! }).on("line", (line) => line === "ready" && resolve());
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        ready,
        consumer.exited.then(() => Promise.reject(new Error(`raw consumer ${name} exited early: ${stderr.join("\n")}`))),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`raw consumer ${name} not ready after 30 s`)), 30_000))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publishes one message to every consumer and waits for all their replies. */
  async fanOut(timeoutMs: number): Promise<FanOutRound> {
    if (this.#collectorFailure !== undefined) throw new Error("raw fan-out: the reply collector failed", { cause: this.#collectorFailure });
    const need = this.#consumers.length;
    const id = randomUUID();
    let resolve!: () => void;
    const allIn = new Promise<void>((r) => (resolve = r));
    const expected: Expected = { need, from: new Map(), resolve };
    this.#expected.set(id, expected);
    let timer: NodeJS.Timeout | undefined;
    try {
      const publishedWall = Date.now();
      const started = performance.now();
      await this.#clients.sns.send(new PublishCommand({ TopicArn: this.#commandTopicArn, Message: id }));
      await Promise.race([
        allIn,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`raw fan-out: ${expected.from.size} of ${need} replies after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      const replies = [...expected.from.values()];
      const last = replies.reduce((a, b) => (b.at > a.at ? b : a));
      const receipts = replies.map((r) => r.reply.receivedAt);
      return {
        latencyMs: last.at - started,
        inboundMs: last.reply.receivedAt - publishedWall,
        outboundMs: last.wallAt - last.reply.receivedAt,
        receiptSpreadMs: Math.max(...receipts) - Math.min(...receipts),
      };
    } finally {
      clearTimeout(timer);
      this.#expected.delete(id);
    }
  }

  /** The plainest round trip: SendMessage on one queue until a waiting long-poll returns it. */
  async sqsRoundTrip(): Promise<number> {
    const sqs = this.#clients.sqs;
    const receiving = sqs.send(new ReceiveMessageCommand({ QueueUrl: this.#pingQueueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 20 }));
    // Let the receive reach the endpoint first, so this times delivery to a waiting poller.
    await new Promise((r) => setTimeout(r, 5));
    const started = performance.now();
    await sqs.send(new SendMessageCommand({ QueueUrl: this.#pingQueueUrl, MessageBody: "ping" }));
    const out = await receiving;
    const elapsed = performance.now() - started;
    const message = out.Messages?.[0];
    if (!message) throw new Error("raw SQS round trip: the long poll returned nothing");
    await sqs.send(new DeleteMessageCommand({ QueueUrl: this.#pingQueueUrl, ReceiptHandle: message.ReceiptHandle! }));
    return elapsed;
  }

  /** Stops every consumer: SIGTERM, then SIGKILL for any still there after the deadline. */
  async stopConsumers(deadlineMs = 5_000): Promise<void> {
    const consumers = this.#consumers.splice(0);
    await Promise.all(
      consumers.map(async (c) => {
        if (c.child.exitCode !== null || c.child.signalCode !== null) return;
        c.child.kill("SIGTERM");
        const timer = setTimeout(() => c.child.kill("SIGKILL"), deadlineMs);
        try {
          await c.exited;
        } finally {
          clearTimeout(timer);
        }
      }),
    );
  }

  /** Safe to call twice; stops the consumers and the collector even when one step fails. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const errors: unknown[] = [];
      await this.stopConsumers().catch((e: unknown) => errors.push(e));
      this.#collecting.abort();
      await this.#collector;
      destroyAwsClients(this.#clients);
      if (errors.length > 0) throw new AggregateError(errors, "raw baseline did not close cleanly");
    })();
    return this.#closing;
  }
}
