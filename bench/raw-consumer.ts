import { DeleteMessageCommand, ReceiveMessageCommand, type Message } from "@aws-sdk/client-sqs";
import { PublishCommand } from "@aws-sdk/client-sns";
import { createAwsClients, destroyAwsClients } from "@bosun/aws";

/**
 * The baseline's stand-in for an agent, with nothing of Bosun in the path: long-polls its own
 * queue and, for each message, publishes a reply naming itself on the reply topic, then deletes
 * the message. The body it receives is the round's id and is sent back as it is.
 *
 *   node bench/raw-consumer.ts NAME QUEUE_URL REPLY_TOPIC_ARN
 *
 * AWS_ENDPOINT_URL, AWS_REGION and credentials come from the environment.
 */
export interface RawReply {
  id: string;
  from: string;
  /** Date.now() when this consumer had the message in hand. */
  receivedAt: number;
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, queueUrl, replyTopicArn] = argv;
  if (!name || !queueUrl || !replyTopicArn) {
    process.stderr.write("usage: raw-consumer.ts NAME QUEUE_URL REPLY_TOPIC_ARN\n");
    return 2;
  }
  const clients = createAwsClients();
  const stopping = new AbortController();
  const stop = () => stopping.abort();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  // The benchmark holds our stdin open; should it die without stopping us, stdin ends and we go too.
  process.stdin.on("end", stop).resume();

  const handle = async (message: Message) => {
    const reply: RawReply = { id: message.Body ?? "", from: name, receivedAt: Date.now() };
    await clients.sns.send(new PublishCommand({ TopicArn: replyTopicArn, Message: JSON.stringify(reply) }));
    await clients.sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle! }));
  };

  process.stdout.write("ready\n");
  try {
    while (!stopping.signal.aborted) {
      let messages: Message[];
      try {
        const out = await clients.sqs.send(
          new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 20 }),
          { abortSignal: stopping.signal },
        );
        messages = out.Messages ?? [];
      } catch (error) {
        if (stopping.signal.aborted) break;
        throw error;
      }
      await Promise.all(messages.map(handle));
    }
  } finally {
    destroyAwsClients(clients);
    process.stdin.pause();
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
