import { Bus, StateStore, stateKeys } from "@bosun/aws";
import { commitPattern } from "@bosun/agent";
import { ConfigError, createMessage, type DesiredRelease } from "@bosun/core";
import type { Context } from "../context.ts";
import { expectedNodes, publishAndFollow, type FollowResult, type NodeProgress } from "../follow.ts";

export interface RollbackOptions {
  app: string;
  to?: string | undefined;
  wait: boolean;
  timeoutSeconds: number;
  onProgress?: (nodes: NodeProgress[]) => void;
}

export interface RollbackResult {
  app: string;
  to: string;
  commandId: string;
  result?: FollowResult;
}

/**
 * Swaps every web node of an app back to a kept release, with no fetch: --to COMMIT, or the
 * release that was desired before the current one. The desired release follows, so a node
 * that boots later syncs to the rolled-back release.
 */
export async function rollback(ctx: Context, options: RollbackOptions): Promise<RollbackResult> {
  const store = new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket });
  const desired = await store.get<DesiredRelease>(stateKeys.release(options.app));
  if (!desired) throw new ConfigError(`App ${options.app} has no release to roll back from (no ${stateKeys.release(options.app)})`);
  const to = options.to ?? desired.previous;
  if (!to) throw new ConfigError(`App ${options.app} has no previous release recorded; pass --to COMMIT`);
  if (!commitPattern.test(to)) throw new ConfigError(`Invalid --to: expected a full 40-character commit id, received ${JSON.stringify(to)}`);
  const sequence = Math.max(Date.now(), desired.sequence + 1);
  await store.put(stateKeys.release(options.app), { ...desired, commit: to, sequence, previous: desired.commit, rollback: true, publishedAt: new Date().toISOString(), issuer: ctx.signer().keyId });
  const envelope = createMessage(ctx.signer(), {
    kind: "command",
    type: "rollback",
    payload: { app: options.app, to, sequence },
    target: { roles: ["web"] },
    ttlSeconds: ctx.settings.commandTtlSeconds,
  });
  const bus = new Bus({ clients: ctx.clients }, { topicArn: await ctx.topicArn() });
  if (!options.wait) {
    await bus.publish(envelope);
    return { app: options.app, to, commandId: envelope.id };
  }
  const expected = await expectedNodes(ctx, { roles: ["web"] });
  const result = await publishAndFollow(ctx, bus, envelope, expected, options.timeoutSeconds * 1000, options.onProgress);
  return { app: options.app, to, commandId: envelope.id, result };
}
