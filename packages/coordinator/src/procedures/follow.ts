import { EventWatcher, StateStore, type Bus } from "@bosun/aws";
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
 * Follows one command's events across the fleet. Open it before publishing, so no event
 * is missed, then wait until every expected node has finished or the timeout comes.
 */
export class CommandFollower {
  readonly #watcher: EventWatcher;
  readonly commandId: string;

  private constructor(watcher: EventWatcher, commandId: string) {
    this.#watcher = watcher;
    this.commandId = commandId;
  }

  static async open(ctx: Issuer, commandId: string): Promise<CommandFollower> {
    const watcher = await EventWatcher.open(
      { clients: ctx.clients, trust: ctx.trust() },
      { cluster: ctx.settings.cluster, topicArn: await ctx.topicArn(), correlationId: commandId, maxBytes: ctx.settings.maxMessageBytes },
    );
    return new CommandFollower(watcher, commandId);
  }

  async wait(expected: readonly string[], timeoutMs: number, onUpdate: (nodes: NodeProgress[]) => void = () => {}): Promise<FollowResult> {
    const progress = new Map<string, NodeProgress>(expected.map((node) => [node, { node, state: "waiting" }]));
    const finished = () => [...progress.values()].every((p) => terminalStates.has(p.state)) && progress.size > 0;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    onUpdate(sorted(progress));
    try {
      if (!(expected.length > 0 && finished())) {
        for await (const item of this.#watcher.events(abort.signal)) {
          if (!item.ok) continue;
          const update = apply(progress.get(nodeOf(item.envelope)), item.envelope);
          if (!update) continue;
          progress.set(update.node, update);
          onUpdate(sorted(progress));
          if (expected.length > 0 && finished()) break;
        }
      }
    } finally {
      clearTimeout(timer);
      await this.#watcher.close();
    }
    const nodes = sorted(progress);
    const failed = nodes.filter((p) => p.state === "failed" || p.state === "refused").map((p) => p.node);
    const missing = nodes.filter((p) => !terminalStates.has(p.state)).map((p) => p.node);
    return { commandId: this.commandId, nodes, failed, missing, ok: failed.length === 0 && missing.length === 0 && nodes.length > 0 };
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
 * subscribed before the command goes out, so no answer is missed.
 */
export async function publishAndFollow(
  ctx: Issuer,
  bus: Bus,
  envelope: Envelope,
  expected: readonly string[],
  timeoutMs: number,
  onUpdate?: (nodes: NodeProgress[]) => void,
): Promise<FollowResult> {
  const follower = await CommandFollower.open(ctx, envelope.id);
  try {
    await bus.publish(envelope);
  } catch (error) {
    await follower.close();
    throw error;
  }
  return follower.wait(expected, timeoutMs, onUpdate);
}
