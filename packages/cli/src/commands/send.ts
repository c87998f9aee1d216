import { Bus } from "@bosun/aws";
import { commandTable } from "@bosun/agent";
import { ConfigError, createMessage, describeTarget, parseTarget, type Target } from "@bosun/core";
import type { Context } from "../context.ts";
import { expectedNodes, publishAndFollow, type FollowResult, type NodeProgress } from "../follow.ts";
import { renderProgress } from "../live.ts";

export interface SendOptions {
  type: string;
  target: string;
  payload: string;
  wait: boolean;
  timeoutSeconds: number;
  onProgress?: (nodes: NodeProgress[]) => void;
}

export interface SendResult {
  commandId: string;
  type: string;
  target: string;
  /** Nodes expected to answer, from the fleet's node records (with --wait). */
  expected?: string[];
  result?: FollowResult;
}

/** Signs and publishes one command; with `wait`, follows it until every target node has answered. */
export async function send(ctx: Context, options: SendOptions): Promise<SendResult> {
  const definition = commandTable.get(options.type);
  if (!definition) {
    throw new ConfigError(`Unknown command type ${JSON.stringify(options.type)}; known types: ${[...commandTable.keys()].join(", ")}`);
  }
  let target: Target;
  try {
    target = parseTarget(options.target);
  } catch (error) {
    throw new ConfigError(`Invalid --target ${JSON.stringify(options.target)}: use all, role:NAME or node:ID, comma separated`, { cause: error });
  }
  let payload: unknown;
  try {
    payload = JSON.parse(options.payload);
  } catch (error) {
    throw new ConfigError(`Invalid --payload: not JSON (${(error as Error).message}), received ${JSON.stringify(options.payload)}`);
  }
  const checked = definition.payload.safeParse(payload);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    throw new ConfigError(`Invalid --payload for ${options.type}: ${issue.path.join(".") || "payload"}: ${issue.message}, received ${options.payload}`);
  }
  const envelope = createMessage(ctx.signer(), { kind: "command", type: options.type, payload, target, ttlSeconds: ctx.settings.commandTtlSeconds });
  const bus = new Bus({ clients: ctx.clients }, { topicArn: await ctx.topicArn() });
  const base = { commandId: envelope.id, type: options.type, target: describeTarget(target) };
  if (!options.wait) {
    await bus.publish(envelope);
    return base;
  }
  const expected = await expectedNodes(ctx, target);
  const result = await publishAndFollow(ctx, bus, envelope, expected, options.timeoutSeconds * 1000, options.onProgress);
  return { ...base, expected, result };
}

/** `withTable: false` when a live view already left the table on the terminal. */
export function renderSend(result: SendResult, options: { withTable: boolean } = { withTable: true }): string {
  const head = `Sent ${result.type} ${result.commandId} to ${result.target}`;
  if (!result.result) return head;
  const lines = options.withTable ? [head, renderProgress(result.result.nodes)] : [head];
  if (result.result.failed.length) lines.push(`Failed: ${result.result.failed.join(", ")}`);
  if (result.result.missing.length) lines.push(`No answer in time: ${result.result.missing.join(", ")}`);
  if (result.result.nodes.length === 0) lines.push("No node was expected or answered: is any node with that role up? (bosun nodes)");
  return lines.join("\n");
}
