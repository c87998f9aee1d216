import { join } from "node:path";
import {
  EventVerifier,
  QueueConsumer,
  TargetGroup,
  elbv2Provider,
  route53Provider,
  ensureSubscribedQueue,
  ensureTopic,
  names,
  nodeQueueTags,
  stateKeys,
  verifyItem,
  type Disposition,
  type ReceivedMessage,
  type WebNodeFact,
} from "@bosun/aws";
import { errorMessage, lbDrainContract, lbEnableContract, type BalancerReport, type EventPayload, type PairSettings } from "@bosun/core";
import { defineCommand, type CommandDefinition, type CommandOutcome } from "../../command.ts";
import type { Role, RoleServices } from "../../role.ts";
import { applyFact, fleetFacts, fleetRecordSchema, type WebFact } from "./backends.ts";
import { Balancer, BalancerError } from "./balancer.ts";
import { HaproxyError } from "./runtime.ts";
import { MONITOR_PATH } from "./haproxy.ts";
import { BalancerPair } from "./pair.ts";
import { elasticIpEntry, route53Entry, type EntryPoint } from "./entry.ts";

/** A balancer command's expected failure (an unknown node, HAProxy refusing) as a failed outcome with its code. */
async function outcome(work: () => Promise<unknown>): Promise<CommandOutcome> {
  try {
    return { status: "done", result: await work() };
  } catch (error) {
    if (error instanceof BalancerError || error instanceof HaproxyError) return { status: "failed", code: error.code, error: error.message };
    throw error;
  }
}

/** The entry point a pair of balancers shares, as its settings name it. */
function pairEntry(services: RoleServices, pair: PairSettings): EntryPoint {
  const entry = pair.entry;
  if (entry.kind === "eip") return elasticIpEntry(services.clients, entry.allocationId, services.node.id);
  // The lease outlives one missed renewal by a margin: the standby's own checks take failures × interval anyway.
  return route53Entry({ route53: route53Provider(), store: services.store, clock: services.clock }, { entry, node: services.node.id, ttlMs: pair.intervalMs * (pair.failures + 1) });
}

/** The target group this balancer keeps, with what it knows of each web node (a drain needs the node's address). */
interface FollowedTargets {
  group: TargetGroup;
  known: Map<string, WebNodeFact>;
  facts: Map<string, WebFact>;
}

/** lb-drain and lb-enable, on HAProxy and on the target group this node keeps; on a node with neither both fail, saying so. */
function commands(balancer: Balancer | undefined, targets: FollowedTargets | undefined, drainTimeoutSeconds: number): CommandDefinition<never>[] {
  const configured = (work: (b: Balancer | undefined) => Promise<unknown>) => () => {
    if (!balancer && !targets) throw new BalancerError("BALANCER_NOT_CONFIGURED", "this node has the balancer role but no balancer settings (the config's balancer section, or BOSUN_BALANCER): it runs no HAProxy");
    return work(balancer);
  };
  const targetFact = (node: string) => {
    const fact = targets?.known.get(node);
    if (!fact) throw new BalancerError("BACKEND_UNKNOWN", `node ${node} is not a target this balancer knows of`);
    return fact;
  };
  const drain = defineCommand(lbDrainContract, {
    // Draining again is harmless: a node already out of rotation has no sessions to wait for.
    onInterrupted: "resume",
    handle: (ctx) =>
      outcome(
        configured(async (b) => {
          const timeoutMs = (ctx.payload.timeoutSeconds ?? drainTimeoutSeconds) * 1000;
          const [haproxy, targetGroup] = await Promise.all([b?.drain(ctx.payload.node, timeoutMs, ctx.signal), targets && targets.group.drain(targetFact(ctx.payload.node), { timeoutMs, signal: ctx.signal })]);
          return { ...haproxy, ...(targetGroup ? { node: ctx.payload.node, targetGroup } : {}) };
        }),
      ),
  });
  const enable = defineCommand(lbEnableContract, {
    onInterrupted: "resume",
    handle: (ctx) =>
      outcome(
        configured(async (b) => {
          await b?.enable(ctx.payload.node);
          if (targets) await targets.group.follow({ ...targetFact(ctx.payload.node), up: true });
          return { node: ctx.payload.node, state: "ready" };
        }),
      ),
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
  if (type === "node-down") return { node: about.id, up: false, at, source: "event", ...((payload as EventPayload<"node-down">).reason === "decommissioned" ? { graceful: true } : {}) };
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
  const settings = services.settings.balancer;
  const groupSettings = services.settings.targetGroup;
  const targets: FollowedTargets | undefined =
    groupSettings?.runBy === "balancer" ? { group: new TargetGroup({ elbv2: elbv2Provider(), logger: log }, { settings: groupSettings }), known: new Map(), facts: new Map() } : undefined;
  if (!settings && !targets) {
    // A node may carry the role before its balancer is set up (a tag set early): it takes the commands and refuses them.
    return {
      name: "balancer",
      commands: commands(undefined, undefined, 0),
      onSubscribed: async () => log.warn("no balancer settings (the config's balancer section, or BOSUN_BALANCER): this node runs no HAProxy"),
    };
  }
  const balancer = settings && new Balancer({ logger: log, events: services.events }, { settings, dir: settings.dir ?? join(services.settings.stateDir, "haproxy"), node: services.node });
  if (balancer) {
    // A leaving web node waits for every balancer's word in S3 (read-after-write consistent) before it stops serving.
    balancer.onLeft = async (nodes) => {
      for (const { name, drained } of nodes) {
        await services.store.put(stateKeys.drain(name, services.node.id), { node: name, balancer: services.node.id, drained, at: services.clock.now().toISOString() });
      }
    };
  }
  const pair =
    settings?.pair &&
    new BalancerPair(
      { entry: pairEntry(services, settings.pair), logger: log, events: services.events },
      // Its own HAProxy checked where it listens (a wildcard bind answers on loopback).
      { settings: settings.pair, node: services.node, self: `http://${/^(0\.0\.0\.0|\*|::)$/.test(settings.listen.host) ? "127.0.0.1" : settings.listen.host.includes(":") ? `[${settings.listen.host}]` : settings.listen.host}:${settings.listen.port}${MONITOR_PATH}` },
    );
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
    if (fact) balancer?.learn(fact);
    // Kept in the message's time: a failed registration leaves the event to be received again.
    if (fact && targets) await targets.group.follow(learnTarget(fact));
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

  /** A web node's fact as the target group reads it; the last known address stays for a node-down, which carries none. */
  function learnTarget(fact: WebFact): WebNodeFact {
    const before = targets!.facts.get(fact.node);
    // The same rule as HAProxy's backends: a fleet record written just after an event does not overrule it.
    const now = applyFact(before, fact);
    targets!.facts.set(fact.node, now);
    const address = now.address ?? before?.address;
    const known = { node: fact.node, roles: ["web"], up: now.up, ...(address ? { address } : {}) };
    targets!.known.set(fact.node, known);
    return known;
  }

  return {
    name: "balancer",
    commands: commands(balancer, targets, settings?.drainTimeoutSeconds ?? 60),
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
        if (!balancer) return { listen: "", backends: [], problem: `no HAProxy on this node; it keeps the target group ${targets!.group.arn}` };
        return { ...balancer.report(), ...(pair ? { pair: pair.report() } : {}) };
      } catch (error) {
        return { listen: "", backends: [], problem: errorMessage(error).slice(0, 300) };
      }
    },
    async close() {
      for (const timer of timers) clearInterval(timer);
      await consumer?.stopReceiving();
      await consumer?.drain(5000);
      // The pair first: it hands the entry point over while this HAProxy still serves.
      await pair?.close();
      await balancer?.close();
    },
  };

  /** Reads the fleet record, starts HAProxy, then follows web nodes' events and HAProxy's checks. */
  async function follow(signal: AbortSignal): Promise<void> {
    const { cluster } = services.settings;
    const topicArn = await ensureTopic(services.clients, cluster);
    // The queue first: events from now on wait there while the fleet record is read and HAProxy starts.
    const queue = await ensureSubscribedQueue(services.clients, topicArn, names.balancerQueue(cluster, services.node.id), { kind: ["event"], type: ["node-up", "node-down"] }, {
      visibilityTimeoutSeconds: 30,
      // Tagged as the node's own, so the coordinator removes it with the node's other queues once the node is gone.
      tags: nodeQueueTags(cluster, services.node),
    });
    const facts = await readFleet().catch((error: unknown) => (log.warn({ err: error }, "could not read the fleet record; starting with no backends"), []));
    await balancer?.start(facts, signal);
    if (signal.aborted) return;
    pair?.start();
    const reconcileTargets = async (facts: WebFact[]) => void (targets && (await targets.group.reconcile(facts.map(learnTarget))));
    await reconcileTargets(facts).catch((error: unknown) => log.warn({ err: error }, "could not compare the target group with the fleet record"));
    const verifier = new EventVerifier({ trust: services.trust, keys: services.nodeKeyDirectory(), clock: services.clock }, { maxBytes: services.settings.maxMessageBytes });
    consumer = new QueueConsumer({ clients: services.clients, logger: log }, { queueUrl: queue.url, dlqUrl: queue.dlqUrl, concurrency: 10, visibilityTimeoutSeconds: 30, batchDeletesMs: 100 });
    consumer.start((message) => onEvent(verifier, message));
    log.info({ haproxy: Boolean(balancer), ...(targets ? { targetGroup: targets.group.arn } : {}) }, "following the fleet's web nodes");
    if (balancer) every(settings!.pollSeconds, "read HAProxy's servers", () => balancer.poll());
    every(settings?.resyncSeconds ?? 30, "compare the backends with the fleet record", async () => {
      const facts = await readFleet();
      for (const fact of facts) balancer?.learn(fact);
      await reconcileTargets(facts);
    });
  }
}
