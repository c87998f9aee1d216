import { Bus, unroutable } from "@bosun/aws";
import { ConfigError, commandContracts, createMessage, describeTarget, parseTarget, type Target } from "@bosun/core";
import { expectedNodes, publishAndFollow, type FollowResult, type NodeProgress } from "./follow.ts";
import type { Issuer } from "./issuer.ts";

export interface SendOptions {
  type: string;
  /** `all`, `role:web`, `node:i-0abc` (comma separated). */
  target: string;
  payload: unknown;
  wait: boolean;
  timeoutSeconds: number;
  onProgress?: (nodes: NodeProgress[]) => void;
}

export interface SendResult {
  commandId: string;
  type: string;
  target: string;
  /** Nodes expected to answer, from the fleet's node records (with wait). */
  expected?: string[];
  result?: FollowResult;
}

/** Checks a command against its contract, signs and publishes it; with `wait`, follows it until every target node has answered. */
export async function sendCommand(issuer: Issuer, options: SendOptions): Promise<SendResult> {
  const contract = commandContracts.get(options.type);
  if (!contract) {
    throw new ConfigError(`Unknown command type ${JSON.stringify(options.type)}; known types: ${[...commandContracts.keys()].join(", ")}`);
  }
  let target: Target;
  try {
    target = parseTarget(options.target);
  } catch (error) {
    throw new ConfigError(`Invalid --target ${JSON.stringify(options.target)}: use all, role:NAME or node:ID, comma separated`, { cause: error });
  }
  const why = unroutable(target);
  if (why) throw new ConfigError(`Invalid --target ${JSON.stringify(options.target)}: ${why}`);
  const checked = contract.payload.safeParse(options.payload);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    throw new ConfigError(`Invalid --payload for ${options.type}: ${issue.path.join(".") || "payload"}: ${issue.message}, received ${JSON.stringify(options.payload)}`);
  }
  const envelope = createMessage(issuer.signer(), { kind: "command", type: options.type, payload: options.payload, target, ttlSeconds: issuer.settings.commandTtlSeconds });
  const bus = new Bus({ clients: issuer.clients }, { topicArn: await issuer.topicArn() });
  const base = { commandId: envelope.id, type: options.type, target: describeTarget(target) };
  if (!options.wait) {
    await bus.publish(envelope);
    return base;
  }
  const expected = await expectedNodes(issuer, target);
  const result = await publishAndFollow(issuer, bus, envelope, expected, options.timeoutSeconds * 1000, options.onProgress);
  return { ...base, expected, result };
}
