import { PublishCommand, type MessageAttributeValue } from "@aws-sdk/client-sns";
import { ConfigError, type Envelope } from "@bosun/core";
import { routingAttributes, unroutable } from "./routing.ts";
import type { AwsClients } from "./clients.ts";

/** Publishes signed envelopes on the cluster's topic, with the attributes the filter policies route on. */
export class Bus {
  readonly #clients: AwsClients;
  readonly topicArn: string;

  constructor(deps: { clients: AwsClients }, options: { topicArn: string }) {
    this.#clients = deps.clients;
    this.topicArn = options.topicArn;
  }

  async publish(envelope: Envelope, signal?: AbortSignal): Promise<void> {
    const why = unroutable(envelope.target);
    if (why) throw new ConfigError(`Cannot publish ${envelope.type}: ${why}`);
    await this.publishRaw(JSON.stringify(envelope), routingAttributes(envelope), signal);
  }

  /** Publishes a body as it is; used for envelopes already serialised and by tests that send bad input. */
  async publishRaw(body: string, attributes: Record<string, string>, signal?: AbortSignal): Promise<string> {
    const MessageAttributes: Record<string, MessageAttributeValue> = {};
    for (const [name, value] of Object.entries(attributes)) MessageAttributes[name] = { DataType: "String", StringValue: value };
    const out = await this.#clients.sns.send(
      new PublishCommand({ TopicArn: this.topicArn, Message: body, MessageAttributes }),
      signal ? { abortSignal: signal } : {},
    );
    return out.MessageId!;
  }
}
