import { EventWatcher, StateStore, abortableDelay, stateKeys, verifyItem, type Bus, type EventVerifier } from "@bosun/aws";
import { targetsNode, type Envelope, type Target } from "@bosun/core";
import { loadNodeRecords } from "../fleet.ts";
import type { Issuer } from "./issuer.ts";

export type NodeProgressState = "waiting" | "acked" | "running" | "done" | "failed" | "refused";

export interface NodeProgress {
  node: string;
  state: NodeProgressState;
  detail?: string;
  fraction?: number;
  durationMs?: number;
  result?: unknown;
}

export interface FollowResult {
  commandId: string;
  nodes: NodeProgress[];
  /** Nodes that failed or refused. */
  failed: string[];
  /** Expected nodes that had not finished when the timeout came. */
  missing: string[];
  ok: boolean;
}

/** The up nodes a target reaches, from the node records; named node ids count even if unknown. */
export async function expectedNodes(ctx: Issuer, target: Target): Promise<string[]> {
  const records = await loadNodeRecords(new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket }));
  const ids = new Set(records.filter((n) => n.status === "up" && targetsNode(target, n.id, n.roles)).map((n) => n.id));
  for (const id of target.nodes ?? []) ids.add(id);
  return [...ids].sort();
}

/**
 * Follows one command across the fleet, from two sources: its events on the bus, through a watch
 * queue opened before the command is published (the live view: acks and progress), and the
 * results nodes keep in S3 (state/results/<command>/), read back every second or so. On AWS a new
 * subscription and its filter can take minutes to deliver everything; S3 is strongly consistent,
 * so a node's answer is never missed. Every event is checked (signature, sender) and must name
 * this command as its correlation.
 */
export class CommandFollower {
  readonly #watcher: EventWatcher;
  readonly #store: StateStore;
  readonly #verifier: EventVerifier;
  readonly commandId: string;

  private constructor(deps: { watcher: EventWatcher; store: StateStore; verifier: EventVerifier }, commandId: string) {
    this.#watcher = deps.watcher;
    this.#store = deps.store;
    this.#verifier = deps.verifier;
    this.commandId = commandId;
  }

  static async open(ctx: Issuer, commandId: string, options: { timeoutMs: number }): Promise<CommandFollower> {
    const verifier = await ctx.verifier();
    const watcher = await EventWatcher.open(
      { clients: ctx.clients, verifier },
      // Wanted as long as the wait, and a little longer; the coordinator's sweep removes it after that if this process dies.
      { cluster: ctx.settings.cluster, topicArn: await ctx.topicArn(), correlationId: commandId, leaseSeconds: Math.ceil(options.timeoutMs / 1000) + 600 },
    );
    return new CommandFollower({ watcher, store: new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket }), verifier }, commandId);
  }

  async wait(expected: readonly string[], timeoutMs: number, onUpdate: (nodes: NodeProgress[]) => void = () => {}): Promise<FollowResult> {
    const progress = new Map<string, NodeProgress>(expected.map((node) => [node, { node, state: "waiting" }]));
    const finished = () => [...progress.values()].every((p) => terminalStates.has(p.state)) && progress.size > 0;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    const arrived: Envelope[] = [];
    let wake: (() => void) | undefined;
    const arrive = (envelope: Envelope) => {
      if (envelope.correlationId !== this.commandId) return;
      arrived.push(envelope);
      wake?.();
    };
    onUpdate(sorted(progress));
    const sources = [this.#live(abort.signal, arrive), this.#results(abort.signal, arrive)];
    try {
      while (!(expected.length > 0 && finished()) && !abort.signal.aborted) {
        if (arrived.length === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
            abort.signal.addEventListener("abort", () => resolve(), { once: true });
          });
          wake = undefined;
        }
        let changed = false;
        for (const envelope of arrived.splice(0)) {
          const update = apply(progress.get(nodeOf(envelope)), envelope);
          if (!update) continue;
          progress.set(update.node, update);
          changed = true;
        }
        if (changed) onUpdate(sorted(progress));
      }
    } finally {
      clearTimeout(timer);
      abort.abort();
      await Promise.allSettled(sources);
      await this.#watcher.close();
    }
    const nodes = sorted(progress);
    const failed = nodes.filter((p) => p.state === "failed" || p.state === "refused").map((p) => p.node);
    const missing = nodes.filter((p) => !terminalStates.has(p.state)).map((p) => p.node);
    return { commandId: this.commandId, nodes, failed, missing, ok: failed.length === 0 && missing.length === 0 && nodes.length > 0 };
  }

  /** Events from the bus, as they come: the live view. */
  async #live(signal: AbortSignal, arrive: (envelope: Envelope) => void): Promise<void> {
    for await (const item of this.#watcher.events(signal)) if (item.ok) arrive(item.envelope);
  }

  /** Results the nodes wrote to S3, read every half second at first, then every few seconds. */
  async #results(signal: AbortSignal, arrive: (envelope: Envelope) => void): Promise<void> {
    const seen = new Set<string>();
    let delay = 500;
    while (!signal.aborted) {
      try {
        for (const key of await this.#store.list(stateKeys.results(this.commandId))) {
          if (seen.has(key)) continue;
          const stored = await this.#store.get(key);
          const item = await verifyItem(this.#verifier, JSON.stringify(stored));
          seen.add(key);
          if (item.ok) arrive(item.envelope);
        }
      } catch {
        // S3 unreachable for a moment: the next round reads again.
      }
      await abortableDelay(delay, signal);
      delay = Math.min(delay * 1.5, 3000);
    }
  }

  async close(): Promise<void> {
    await this.#watcher.close();
  }
}

const terminalStates = new Set<NodeProgressState>(["done", "failed", "refused"]);

function nodeOf(event: Envelope): string {
  return (event.payload as { node: { id: string } }).node.id;
}

function apply(previous: NodeProgress | undefined, event: Envelope): NodeProgress | undefined {
  const node = nodeOf(event);
  const current: NodeProgress = previous ?? { node, state: "waiting" };
  if (terminalStates.has(current.state)) return undefined;
  const p = event.payload as Record<string, unknown>;
  switch (event.type) {
    case "ack":
      return { ...current, state: "acked", detail: p["resumed"] ? "resumed" : "accepted" };
    case "progress":
      return { ...current, state: "running", detail: String(p["message"]), ...(typeof p["fraction"] === "number" ? { fraction: p["fraction"] } : {}) };
    case "done":
      return { node, state: "done", durationMs: Number(p["durationMs"]), result: p["result"], detail: "done" };
    case "failed":
      return { node, state: "failed", detail: `${String(p["code"] ?? "")} ${String(p["error"])}`.trim() };
    case "refused":
      return { node, state: "refused", detail: `${String(p["reason"])}: ${String(p["detail"])}` };
    default:
      return undefined;
  }
}

function sorted(progress: Map<string, NodeProgress>): NodeProgress[] {
  return [...progress.values()].sort((a, b) => a.node.localeCompare(b.node));
}

/**
 * Publishes a command and follows it until `expected` nodes have answered: the watch queue is
 * subscribed before the command goes out, and the results in S3 catch what it does not deliver.
 */
export async function publishAndFollow(
  ctx: Issuer,
  bus: Bus,
  envelope: Envelope,
  expected: readonly string[],
  timeoutMs: number,
  onUpdate?: (nodes: NodeProgress[]) => void,
): Promise<FollowResult> {
  const follower = await CommandFollower.open(ctx, envelope.id, { timeoutMs });
  try {
    await bus.publish(envelope);
  } catch (error) {
    await follower.close();
    throw error;
  }
  return follower.wait(expected, timeoutMs, onUpdate);
}
