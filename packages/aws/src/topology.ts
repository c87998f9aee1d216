import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  SetQueueAttributesCommand,
} from "@aws-sdk/client-sqs";
import {
  CreateTopicCommand,
  ListSubscriptionsByTopicCommand,
  SetSubscriptionAttributesCommand,
  SubscribeCommand,
  UnsubscribeCommand,
} from "@aws-sdk/client-sns";
import { CreateBucketCommand, HeadBucketCommand } from "@aws-sdk/client-s3";
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
  /** Deliveries after which SQS itself moves a message to the dead-letter queue. */
  maxReceiveCount?: number;
}

/** Creates the topic (idempotent) and returns its ARN. */
export async function ensureTopic(clients: AwsClients, cluster: string): Promise<string> {
  const out = await clients.sns.send(new CreateTopicCommand({ Name: names.topic(cluster) }));
  return out.TopicArn!;
}

export async function ensureBucket(clients: AwsClients, bucket: string): Promise<void> {
  try {
    await clients.s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await clients.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  }
}

async function ensureQueue(clients: AwsClients, name: string, attributes: Record<string, string>): Promise<{ url: string; arn: string }> {
  const created = await clients.sqs.send(new CreateQueueCommand({ QueueName: name }));
  const url = created.QueueUrl!;
  // CreateQueue refuses different attributes for an existing queue; setting them after makes it idempotent.
  await clients.sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: attributes }));
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
  const dlq = await ensureQueue(clients, names.deadLetter(name), { MessageRetentionPeriod: String(14 * 24 * 3600) });
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
  });
  const subscriptionArn = await ensureSubscription(clients, topicArn, queue.arn, filterPolicy);
  return { name, url: queue.url, arn: queue.arn, dlqUrl: dlq.url, dlqArn: dlq.arn, subscriptionArn };
}

async function ensureSubscription(clients: AwsClients, topicArn: string, queueArn: string, filterPolicy: Record<string, unknown>): Promise<string> {
  const policy = JSON.stringify(filterPolicy);
  let token: string | undefined;
  do {
    const page = await clients.sns.send(new ListSubscriptionsByTopicCommand({ TopicArn: topicArn, NextToken: token }));
    const existing = page.Subscriptions?.find((s) => s.Endpoint === queueArn && s.Protocol === "sqs");
    if (existing?.SubscriptionArn) {
      // Roles can change between starts; the filter follows them.
      await clients.sns.send(
        new SetSubscriptionAttributesCommand({ SubscriptionArn: existing.SubscriptionArn, AttributeName: "FilterPolicy", AttributeValue: policy }),
      );
      return existing.SubscriptionArn;
    }
    token = page.NextToken;
  } while (token);
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
