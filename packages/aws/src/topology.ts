import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ListQueuesCommand,
  ListQueueTagsCommand,
  SetQueueAttributesCommand,
  TagQueueCommand,
} from "@aws-sdk/client-sqs";
import {
  CreateTopicCommand,
  ListSubscriptionsByTopicCommand,
  SetSubscriptionAttributesCommand,
  SubscribeCommand,
  UnsubscribeCommand,
} from "@aws-sdk/client-sns";
import { CreateBucketCommand, HeadBucketCommand, type BucketLocationConstraint } from "@aws-sdk/client-s3";
import { AwsError } from "@bosun/core";
import type { AwsClients } from "./clients.ts";
import { names } from "./names.ts";

export interface QueueRef {
  name: string;
  url: string;
  arn: string;
  dlqUrl: string;
  dlqArn: string;
  subscriptionArn: string;
}

export interface QueueOptions {
  visibilityTimeoutSeconds: number;
  /**
   * Tags on the queue and its dead-letter queue (cluster, node, role; a watch queue's expiry), so
   * they can be found and cleaned up; the dead-letter queue's bosun:kind is dead-letter.
   */
  tags?: Record<string, string>;
  /** Deliveries after which SQS itself moves a message to the dead-letter queue. */
  maxReceiveCount?: number;
}

/** Creates the topic (idempotent) and returns its ARN. */
export async function ensureTopic(clients: AwsClients, cluster: string): Promise<string> {
  const out = await clients.sns.send(new CreateTopicCommand({ Name: names.topic(cluster) }));
  return out.TopicArn!;
}

/**
 * Creates the cluster's bucket unless it exists. Only a 404 means "missing": a 403 means the
 * name is taken by another account (bucket names are global) or this identity may not see it,
 * which creating cannot fix. Outside us-east-1 the bucket is created in the client's region.
 */
export async function ensureBucket(clients: AwsClients, bucket: string): Promise<void> {
  try {
    await clients.s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return;
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 403) throw new AwsError(`Bucket ${bucket} exists but this identity may not use it (403): its name is taken by another account, or the IAM policy lacks s3:ListBucket on it`, { cause: error });
    if (status !== 404 && (error as { name?: string }).name !== "NotFound") throw error;
  }
  const region = await clients.s3.config.region();
  await clients.s3.send(
    new CreateBucketCommand({ Bucket: bucket, ...(region && region !== "us-east-1" ? { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } } : {}) }),
  );
}

async function ensureQueue(clients: AwsClients, name: string, attributes: Record<string, string>, tags?: Record<string, string>): Promise<{ url: string; arn: string }> {
  const created = await clients.sqs.send(new CreateQueueCommand({ QueueName: name, ...(tags ? { tags } : {}) }));
  const url = created.QueueUrl!;
  // CreateQueue refuses different attributes for an existing queue; setting them after makes it idempotent.
  await clients.sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: attributes }));
  // Likewise tags: CreateQueue sets them only on a new queue.
  if (tags) await clients.sqs.send(new TagQueueCommand({ QueueUrl: url, Tags: tags }));
  const got = await clients.sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }));
  return { url, arn: got.Attributes!["QueueArn"]! };
}

/**
 * A queue with its dead-letter queue, subscribed to the topic with the given filter policy.
 * Safe to call at every start: existing resources are found and brought to the wanted settings.
 */
export async function ensureSubscribedQueue(
  clients: AwsClients,
  topicArn: string,
  name: string,
  filterPolicy: Record<string, unknown>,
  options: QueueOptions,
): Promise<QueueRef> {
  // Tagged as a dead-letter queue whatever its queue's kind: the stack's alarm finds every DLQ of
  // the cluster by bosun:kind=dead-letter, since agents make them at run time (deploy/cdk).
  const dlqTags = options.tags ? { ...options.tags, "bosun:kind": "dead-letter" } : undefined;
  const dlq = await ensureQueue(clients, names.deadLetter(name), { MessageRetentionPeriod: String(14 * 24 * 3600) }, dlqTags);
  const queue = await ensureQueue(clients, name, {
    VisibilityTimeout: String(options.visibilityTimeoutSeconds),
    ReceiveMessageWaitTimeSeconds: "20",
    RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.arn, maxReceiveCount: String(options.maxReceiveCount ?? 5) }),
    Policy: JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "bosun-topic",
          Effect: "Allow",
          Principal: { Service: "sns.amazonaws.com" },
          Action: "sqs:SendMessage",
          Resource: "*",
          Condition: { ArnEquals: { "aws:SourceArn": topicArn } },
        },
      ],
    }),
  }, options.tags);
  const subscriptionArn = await ensureSubscription(clients, topicArn, queue.arn, filterPolicy);
  return { name, url: queue.url, arn: queue.arn, dlqUrl: dlq.url, dlqArn: dlq.arn, subscriptionArn };
}

async function ensureSubscription(clients: AwsClients, topicArn: string, queueArn: string, filterPolicy: Record<string, unknown>): Promise<string> {
  const policy = JSON.stringify(filterPolicy);
  const existing = await subscriptionOf(clients, topicArn, queueArn);
  if (existing) {
    // Roles can change between starts; the filter follows them (on AWS within 15 minutes: the agent checks every target itself).
    await clients.sns.send(new SetSubscriptionAttributesCommand({ SubscriptionArn: existing, AttributeName: "FilterPolicy", AttributeValue: policy }));
    return existing;
  }
  // The filter goes in the Subscribe call itself, so the subscription is never without it.
  const out = await clients.sns.send(
    new SubscribeCommand({
      TopicArn: topicArn,
      Protocol: "sqs",
      Endpoint: queueArn,
      Attributes: { RawMessageDelivery: "true", FilterPolicy: policy, FilterPolicyScope: "MessageAttributes" },
      ReturnSubscriptionArn: true,
    }),
  );
  return out.SubscriptionArn!;
}

/** Unsubscribes and deletes a queue and its dead-letter queue (temporary watch queues, decommissioned nodes). */
export async function removeQueue(clients: AwsClients, queue: QueueRef, options: { keepDeadLetters?: boolean } = {}): Promise<void> {
  const steps = [
    () => clients.sns.send(new UnsubscribeCommand({ SubscriptionArn: queue.subscriptionArn })),
    () => clients.sqs.send(new DeleteQueueCommand({ QueueUrl: queue.url })),
    ...(options.keepDeadLetters ? [] : [() => clients.sqs.send(new DeleteQueueCommand({ QueueUrl: queue.dlqUrl }))]),
  ];
  const errors: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, `could not fully remove queue ${queue.name}`);
}

/** Queues of a cluster whose names start with `prefix` (and pass `keep`, when given), with their tags. */
export async function queuesByPrefix(
  clients: AwsClients,
  prefix: string,
  keep: (name: string) => boolean = () => true,
): Promise<{ url: string; name: string; tags: Record<string, string> }[]> {
  const found: { url: string; name: string; tags: Record<string, string> }[] = [];
  let token: string | undefined;
  do {
    const page = await clients.sqs.send(new ListQueuesCommand({ QueueNamePrefix: prefix, NextToken: token, MaxResults: 1000 }));
    for (const url of page.QueueUrls ?? []) {
      const name = url.split("/").pop()!;
      if (!keep(name)) continue;
      const { Tags } = await clients.sqs.send(new ListQueueTagsCommand({ QueueUrl: url }));
      found.push({ url, name, tags: Tags ?? {} });
    }
    token = page.NextToken;
  } while (token);
  return found;
}

/** The tag that names the node a queue belongs to; with `bosun:cluster`, what the coordinator goes by. */
export const NODE_TAG = "bosun:node";

/**
 * Tags for the queues an agent makes for its node (and their dead-letter queues). SNS
 * subscriptions take no tags: a subscription belongs to the node whose queue is its endpoint.
 * Roles are separated by spaces, as commas are not among the characters AWS allows in tags.
 */
export function nodeQueueTags(cluster: string, node: { id: string; roles: readonly string[] }): Record<string, string> {
  return { "bosun:cluster": cluster, "bosun:kind": "node", [NODE_TAG]: node.id, "bosun:role": node.roles.join(" ") };
}

/** What was removed of one node's resources, and what could not be. */
export interface RemovedNodeQueues {
  queues: string[];
  subscriptions: string[];
  errors: unknown[];
}

/**
 * Removes the queues tagged as the given nodes' in this cluster (node queues, a balancer's
 * event queue, their dead-letter queues) and those queues' subscriptions to the topic. A queue
 * is touched only when its tags name both the cluster and the node: untagged queues (made
 * before the tags were) are left to a person. Each step runs even when another fails.
 */
export async function removeNodeQueues(
  clients: AwsClients,
  options: { cluster: string; topicArn: string; nodes: readonly string[] },
): Promise<Map<string, RemovedNodeQueues>> {
  const result = new Map(options.nodes.map((id) => [id, { queues: [] as string[], subscriptions: [] as string[], errors: [] as unknown[] }]));
  // Names end in the node id (bosun-CLUSTER-node-ID, bosun-CLUSTER-lb-ID, then -dlq): only those have their tags read.
  const endsInNode = (name: string) => options.nodes.some((id) => name.endsWith(`-${id}`) || name.endsWith(`-${id}-dlq`));
  const queues = (await queuesByPrefix(clients, `bosun-${options.cluster}-`, endsInNode)).filter(
    (q) => q.tags["bosun:cluster"] === options.cluster && result.has(q.tags[NODE_TAG] ?? ""),
  );
  if (queues.length === 0) return result;
  const subscriptions = await subscriptionsByEndpoint(clients, options.topicArn);
  // Dead-letter queues last, so a queue never redrives into one that is gone.
  queues.sort((a, b) => Number(a.name.endsWith("-dlq")) - Number(b.name.endsWith("-dlq")));
  for (const queue of queues) {
    const removed = result.get(queue.tags[NODE_TAG]!)!;
    try {
      const { Attributes } = await clients.sqs.send(new GetQueueAttributesCommand({ QueueUrl: queue.url, AttributeNames: ["QueueArn"] }));
      const subscription = subscriptions.get(Attributes?.["QueueArn"] ?? "");
      if (subscription) {
        await clients.sns.send(new UnsubscribeCommand({ SubscriptionArn: subscription }));
        removed.subscriptions.push(subscription);
      }
      await clients.sqs.send(new DeleteQueueCommand({ QueueUrl: queue.url }));
      removed.queues.push(queue.name);
    } catch (error) {
      removed.errors.push(error);
    }
  }
  return result;
}

/** Every SQS subscription to the topic, by the queue ARN it delivers to. */
async function subscriptionsByEndpoint(clients: AwsClients, topicArn: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  let token: string | undefined;
  do {
    const page = await clients.sns.send(new ListSubscriptionsByTopicCommand({ TopicArn: topicArn, NextToken: token }));
    for (const s of page.Subscriptions ?? []) if (s.Protocol === "sqs" && s.Endpoint && s.SubscriptionArn) found.set(s.Endpoint, s.SubscriptionArn);
    token = page.NextToken;
  } while (token);
  return found;
}

/** The subscription of a queue to the topic, if there is one. */
export async function subscriptionOf(clients: AwsClients, topicArn: string, queueArn: string): Promise<string | undefined> {
  let token: string | undefined;
  do {
    const page = await clients.sns.send(new ListSubscriptionsByTopicCommand({ TopicArn: topicArn, NextToken: token }));
    const existing = page.Subscriptions?.find((s) => s.Endpoint === queueArn && s.Protocol === "sqs");
    if (existing?.SubscriptionArn) return existing.SubscriptionArn;
    token = page.NextToken;
  } while (token);
  return undefined;
}
