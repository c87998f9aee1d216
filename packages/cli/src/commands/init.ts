import { ensureBucket, ensureSubscribedQueue, names } from "@bosun/aws";
import type { Context } from "../context.ts";

export interface InitResult {
  cluster: string;
  topicArn: string;
  bucket: string;
  coordinatorQueue: string;
}

/** Creates the cluster's topic, bucket and coordinator queue. Idempotent: run it as often as you like. */
export async function init(ctx: Context): Promise<InitResult> {
  const { cluster, bucket } = ctx.settings;
  const topicArn = await ctx.topicArn();
  await ensureBucket(ctx.clients, bucket);
  const queue = await ensureSubscribedQueue(ctx.clients, topicArn, names.coordinatorQueue(cluster), { kind: ["event"] }, { visibilityTimeoutSeconds: 30 });
  return { cluster, topicArn, bucket, coordinatorQueue: queue.name };
}

export function renderInit(result: InitResult): string {
  return [
    `Cluster "${result.cluster}" is ready.`,
    `  topic:             ${result.topicArn}`,
    `  bucket:            ${result.bucket}`,
    `  coordinator queue: ${result.coordinatorQueue}`,
    `Node queues are created by each agent when it starts.`,
  ].join("\n");
}
