import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { TrustStore, createMessage, generateSigningKey, privateKeyFromPem, publicKeyFromBase64, settingsSchema, type Envelope, type EventPayload, type EventType, type Logger, type NodeRef, type Settings, type Signer, type Target } from "@bosun/core";
import { StateStore, signRecord, type AwsClients, type ReceivedMessage } from "@bosun/aws";
import { Ledger, MessagePipeline, type CommandDefinition, type EventSink, type RoleServices } from "@bosun/agent";

export interface SpiedEvent {
  type: EventType;
  correlationId: string;
  payload: EventPayload<EventType>;
}

/** An event sink that records what the pipeline reports and lets a test wait for it. */
export class EventSpy implements EventSink {
  readonly events: SpiedEvent[] = [];
  #waiters: (() => void)[] = [];

  async emit<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>): Promise<void> {
    this.events.push({ type, correlationId, payload });
    for (const wake of this.#waiters.splice(0)) wake();
  }

  of(type: EventType, correlationId?: string): SpiedEvent[] {
    return this.events.filter((e) => e.type === type && (correlationId === undefined || e.correlationId === correlationId));
  }

  /** Resolves once `match` holds over the recorded events; fails after `timeoutMs`. */
  async waitFor(match: (events: readonly SpiedEvent[]) => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!match(this.events)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
}

/** A message pipeline in this process: a real ledger in a temp directory, trusted keys, a spy for events. */
export class PipelineHarness {
  readonly events = new EventSpy();
  readonly signer: Signer;
  readonly pipeline: MessagePipeline;
  readonly ledger: Ledger;
  readonly dir: string;
  #n = 0;

  private constructor(dir: string, signer: Signer, trust: TrustStore, commands: CommandDefinition<never>[], settings: Record<string, unknown>) {
    this.dir = dir;
    this.signer = signer;
    this.ledger = new Ledger({ dir: join(dir, "ledger") });
    const node = { id: "node-1", roles: ["web"] };
    const parsed = settingsSchema.parse({ stateDir: dir, ...settings });
    const clock = { now: () => new Date() };
    const logger = pino({ level: "silent" });
    const services = offlineServices({ node, settings: parsed, events: this.events, trust, logger });
    this.pipeline = new MessagePipeline(
      { ledger: this.ledger, events: this.events, clock, trust, logger, services },
      {
        node,
        settings: parsed,
        commands: new Map(commands.map((c) => [c.type, c])),
        bootId: randomUUID(),
      },
    );
  }

  static async create(commands: CommandDefinition<never>[], settings: Record<string, unknown> = {}): Promise<PipelineHarness> {
    const dir = await mkdtemp(join(tmpdir(), "bosun-pipeline-"));
    const key = generateSigningKey();
    const trust = new TrustStore([{ id: "oncall", publicKey: publicKeyFromBase64(key.publicKey), allow: ["*"] }]);
    const harness = new PipelineHarness(dir, { keyId: "oncall", privateKey: privateKeyFromPem(key.privateKeyPem) }, trust, commands, settings);
    await harness.ledger.open();
    return harness;
  }

  command(type: string, payload: unknown, target: Target = { nodes: ["node-1"] }): Envelope {
    return createMessage(this.signer, { kind: "command", type, payload, target, ttlSeconds: 300 });
  }

  /** One SQS delivery of a body: a fresh SQS message id unless one is given (a redelivery). */
  delivery(body: string, sqsMessageId = `sqs-${++this.#n}`): ReceivedMessage {
    return { sqsMessageId, body, receiveCount: 1, attributes: {} };
  }

  close(): Promise<void> {
    return rm(this.dir, { recursive: true, force: true });
  }
}

/** A role's services with no AWS behind them: for handlers and roles run in this process. */
export function offlineServices(options: { node: NodeRef; settings: Settings; events: EventSink; trust?: TrustStore; logger?: Logger }): RoleServices {
  const clients = noAws();
  const key = generateSigningKey();
  const signer: Signer = { keyId: `node.${options.node.id}`, privateKey: privateKeyFromPem(key.privateKeyPem) };
  return {
    node: options.node,
    settings: options.settings,
    logger: options.logger ?? pino({ level: "silent" }),
    clock: { now: () => new Date() },
    clients,
    store: new StateStore({ clients }, { bucket: "unused" }),
    trust: options.trust ?? new TrustStore([]),
    events: options.events,
    signRecord: (type, payload) => signRecord(signer, type, payload),
    nodeKeyDirectory: () => {
      throw new Error("this test does not reach AWS, but looked up nodes' keys");
    },
  };
}

/** AWS clients for tests that must not reach AWS: any use fails, saying so. */
export function noAws(): AwsClients {
  const refuse = (name: string) =>
    new Proxy({}, { get: (_target, property) => { throw new Error(`this test does not reach AWS, but used ${name}.${String(property)}`); } });
  return { sqs: refuse("sqs"), sns: refuse("sns"), s3: refuse("s3"), ec2: async () => refuse("ec2") } as unknown as AwsClients;
}
