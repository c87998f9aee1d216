import { join } from "node:path";
import {
  EventVerifier,
  QueueConsumer,
  ensureSubscribedQueue,
  ensureTopic,
  names,
  stateKeys,
  verifyItem,
  type Disposition,
  type ReceivedMessage,
} from "@bosun/aws";
import { errorMessage, lbDrainContract, lbEnableContract, type BalancerReport, type EventPayload } from "@bosun/core";
import { defineCommand, type CommandDefinition, type CommandOutcome } from "../../command.ts";
import type { Role, RoleServices } from "../../role.ts";
import { fleetFacts, fleetRecordSchema, type WebFact } from "./backends.ts";
import { Balancer, BalancerError } from "./balancer.ts";
import { HaproxyError } from "./runtime.ts";

/** A balancer command's expected failure (an unknown node, HAProxy refusing) as a failed outcome with its code. */
async function outcome(work: () => Promise<unknown>): Promise<CommandOutcome> {
  try {
    return { status: "done", result: await work() };
  } catch (error) {
    if (error instanceof BalancerError || error instanceof HaproxyError) return { status: "failed", code: error.code, error: error.message };
    throw error;
  }
}

/** lb-drain and lb-enable; on a node without balancer settings both fail, saying so. */
function commands(balancer: Balancer | undefined, drainTimeoutSeconds: number): CommandDefinition<never>[] {
  const configured = (work: (b: Balancer) => Promise<unknown>) => () => {
    if (!balancer) throw new BalancerError("BALANCER_NOT_CONFIGURED", "this node has the balancer role but no balancer settings (the config's balancer section, or BOSUN_BALANCER): it runs no HAProxy");
    return work(balancer);
  };
  const drain = defineCommand(lbDrainContract, {
    // Draining again is harmless: a node already out of rotation has no sessions to wait for.
    onInterrupted: "resume",
    handle: (ctx) => outcome(configured((b) => b.drain(ctx.payload.node, (ctx.payload.timeoutSeconds ?? drainTimeoutSeconds) * 1000, ctx.signal))),
  });
  const enable = defineCommand(lbEnableContract, {
    onInterrupted: "resume",
    handle: (ctx) => outcome(configured(async (b) => (await b.enable(ctx.payload.node), { node: ctx.payload.node, state: "ready" }))),
  });
  return [drain, enable] as CommandDefinition<never>[];
}

/** A web node's node-up or node-down as a fact; other events, and other nodes' events, say nothing about backends. */
export function factOf(type: string, issuedAt: string, payload: unknown): WebFact | undefined {
  const about = (payload as { node?: { id?: string; roles?: string[] } }).node;
  if (!about?.id || !about.roles?.includes("web")) return undefined;
  const at = Date.parse(issuedAt);
  if (type === "node-up") {
    const address = (payload as EventPayload<"node-up">).report.web?.address;
    return { node: about.id, up: true, ...(address ? { address } : {}), at, source: "event" };
  }
  if (type === "node-down") return { node: about.id, up: false, at, source: "event" };
  return undefined;
}

/**
 * The balancer role: the node runs HAProxy in front of the fleet's web nodes. Once subscribed it
 * reads the fleet record (a new or restarted balancer gets the full list), starts HAProxy, then
 * follows web nodes' node-up and node-down events on a queue of its own, applying bursts as one
 * update through HAProxy's runtime API. It drains and re-enables nodes on command (lb-drain,
 * lb-enable), reports checks' changes of verdict as lb-health events, and its backends with every heartbeat.
 */
export function balancerRole(services: RoleServices): Role {
  const log = services.logger.child({ role: "balancer" });
  const configured = services.settings.balancer;
  if (!configured) {
    // A node may carry the role before its balancer is set up (a tag set early): it takes the commands and refuses them.
    return {
      name: "balancer",
      commands: commands(undefined, 0),
      onSubscribed: async () => log.warn("no balancer settings (the config's balancer section, or BOSUN_BALANCER): this node runs no HAProxy"),
    };
  }
  const settings = configured;
  const balancer = new Balancer({ logger: log, events: services.events }, { settings, dir: settings.dir ?? join(services.settings.stateDir, "haproxy"), node: services.node });
  let consumer: QueueConsumer | undefined;
  const timers: NodeJS.Timeout[] = [];

  const readFleet = async (): Promise<WebFact[]> => {
    const raw = await services.store.get(stateKeys.fleet);
    if (raw === undefined) return [];
    const parsed = fleetRecordSchema.safeParse(raw);
    if (!parsed.success) throw new Error(`the fleet record ${stateKeys.fleet} is malformed: ${parsed.error.issues[0]?.message ?? ""}`);
    return fleetFacts(parsed.data);
  };

  const onEvent = async (verifier: EventVerifier, message: ReceivedMessage): Promise<Disposition> => {
    const item = await verifyItem(verifier, message.body);
    if (!item.ok) {
      log.warn({ reason: item.refusal.reason, detail: item.refusal.detail }, "refused an event about the fleet");
      return { action: "dead-letter", reason: item.refusal.reason, detail: item.refusal.detail };
    }
    const fact = factOf(item.envelope.type, item.envelope.issuedAt, item.envelope.payload);
    if (fact) balancer.learn(fact);
    return { action: "delete" };
  };

  const every = (seconds: number, what: string, work: () => Promise<void>) => {
    let running = false;
    timers.push(
      setInterval(() => {
        if (running) return;
        running = true;
        work()
          .catch((error: unknown) => log.warn({ err: error }, `could not ${what}`))
          .finally(() => (running = false));
      }, seconds * 1000),
    );
  };

  return {
    name: "balancer",
    commands: commands(balancer, settings.drainTimeoutSeconds),
    async onSubscribed(signal) {
      try {
        await follow(signal);
      } catch (error) {
        if (signal.aborted) return;
        // The agent keeps taking commands; an operator must hear that this node balances nothing.
        log.error({ err: error }, "the balancer could not start");
        await services.events
          .emit("alert", `balancer-start-${services.node.id}-${Date.now()}`, { node: services.node, severity: "critical", code: "BALANCER_NOT_STARTED", message: errorMessage(error).slice(0, 2000) })
          .catch(() => undefined);
      }
    },
    async report(): Promise<BalancerReport> {
      try {
        return balancer.report();
      } catch (error) {
        return { listen: "", backends: [], problem: errorMessage(error).slice(0, 300) };
      }
    },
    async close() {
      for (const timer of timers) clearInterval(timer);
      await consumer?.stopReceiving();
      await consumer?.drain(5000);
      await balancer.close();
    },
  };

  /** Reads the fleet record, starts HAProxy, then follows web nodes' events and HAProxy's checks. */
  async function follow(signal: AbortSignal): Promise<void> {
    const { cluster } = services.settings;
    const topicArn = await ensureTopic(services.clients, cluster);
    // The queue first: events from now on wait there while the fleet record is read and HAProxy starts.
    const queue = await ensureSubscribedQueue(services.clients, topicArn, names.balancerQueue(cluster, services.node.id), { kind: ["event"], type: ["node-up", "node-down"] }, { visibilityTimeoutSeconds: 30 });
    await balancer.start(await readFleet().catch((error: unknown) => (log.warn({ err: error }, "could not read the fleet record; starting with no backends"), [])), signal);
    if (signal.aborted) return;
    const verifier = new EventVerifier({ trust: services.trust, keys: services.nodeKeyDirectory(), clock: services.clock }, { maxBytes: services.settings.maxMessageBytes });
    consumer = new QueueConsumer({ clients: services.clients, logger: log }, { queueUrl: queue.url, dlqUrl: queue.dlqUrl, concurrency: 10, visibilityTimeoutSeconds: 30, batchDeletesMs: 100 });
    consumer.start((message) => onEvent(verifier, message));
    every(settings.pollSeconds, "read HAProxy's servers", () => balancer.poll());
    every(settings.resyncSeconds, "compare the backends with the fleet record", async () => {
      for (const fact of await readFleet()) balancer.learn(fact);
    });
  }
}
