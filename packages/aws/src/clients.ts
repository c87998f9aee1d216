import { SQSClient } from "@aws-sdk/client-sqs";
import { SNSClient } from "@aws-sdk/client-sns";
import { S3Client } from "@aws-sdk/client-s3";
import type { EC2Client } from "@aws-sdk/client-ec2";
import { appendFileSync } from "node:fs";

export interface AwsClients {
  sqs: SQSClient;
  sns: SNSClient;
  s3: S3Client;
  /** Loaded on first use: only an agent finding its identity on EC2 needs it, and it is large. */
  ec2: (() => Promise<EC2Client>) & { loaded?: Promise<EC2Client> };
}

/**
 * The SDK clients, configured by the SDK's own means (AWS_REGION, AWS_ENDPOINT_URL,
 * the default credential chain). Against a local endpoint two SDK options matter:
 * queue URLs name a host of their own that only AWS resolves, and buckets go in the path.
 */
export function createAwsClients(explicit?: ExplicitAws): AwsClients {
  const env = process.env;
  const local = (service: string) => Boolean(explicit?.endpoint || env["AWS_ENDPOINT_URL"] || env[`AWS_ENDPOINT_URL_${service}`]);
  // Explicit settings are for a process that talks to more than one endpoint (the test suite).
  const base = explicit ? { endpoint: explicit.endpoint, region: explicit.region, credentials: { accessKeyId: "test", secretAccessKey: "test" } } : {};
  // Read once: when unset, no middleware is added and calls cost nothing extra.
  const log = env["BOSUN_AWS_CALL_LOG"] || undefined;
  const record = <C extends Recordable>(service: string, client: C): C => (log ? recordCalls(client, service, log) : client);
  return {
    sqs: record("sqs", new SQSClient({ ...base, useQueueUrlAsEndpoint: !local("SQS") })),
    sns: record("sns", new SNSClient(base)),
    s3: record("s3", new S3Client({ ...base, ...(explicit?.s3Endpoint ? { endpoint: explicit.s3Endpoint } : {}), forcePathStyle: local("S3") })),
    ec2: lazy(async () => record("ec2", new (await import("@aws-sdk/client-ec2")).EC2Client(base))),
  };
}

/** A client made outside createAwsClients (ELBv2, Route 53: loaded only where needed), recorded as those are when BOSUN_AWS_CALL_LOG is set. */
export function recorded<C extends Recordable>(service: string, client: C): C {
  const log = process.env["BOSUN_AWS_CALL_LOG"] || undefined;
  return log ? recordCalls(client, service, log) : client;
}

/** One AWS call as the recorder writes it: a JSON line per call, in the order the calls ended. */
export interface RecordedCall {
  /** The SDK client's service: `sqs`, `sns`, `s3`, `ec2`, `elasticloadbalancing`, `route53`. */
  service: string;
  /** The API operation (`PutObject`, `ReceiveMessage`), which IAM names its action after, mostly. */
  operation: string;
  /** The parameters that name what the call acts on (bucket, key, queue, topic, subscription, protocol, endpoint, instance...). */
  params: Record<string, unknown>;
  /** The error's name when the call failed. */
  error?: string;
  pid: number;
}

/**
 * Input fields that say which resource a call acts on and the condition keys IAM sees (tags a
 * call sets need a tagging permission too); never bodies or message text.
 */
const resourceFields = [
  "Bucket", "Key", "Prefix", "CopySource", "QueueUrl", "QueueName", "QueueNamePrefix", "TopicArn", "Name", "SubscriptionArn", "Protocol", "Endpoint",
  "AllocationId", "AssociationId", "PublicIp", "InstanceId", "InstanceIds", "VolumeId", "SnapshotId", "Filters", "Resources", "tags", "Tags", "TagSpecifications",
  "TargetGroupArn", "TargetGroupArns", "HostedZoneId",
] as const;

interface Recordable {
  middlewareStack: { add(middleware: never, options: { step: "initialize"; name: string }): void };
}

/**
 * Appends every call the client makes to `path` (BOSUN_AWS_CALL_LOG): which service, operation
 * and resource, so the IAM policies can be checked against what the code really does.
 * Each line is one append(2) of a whole line, so processes may share a file.
 */
function recordCalls<C extends Recordable>(client: C, service: string, path: string): C {
  const middleware =
    (next: (args: { input: Record<string, unknown> }) => Promise<unknown>, context: { commandName?: string }) =>
    async (args: { input: Record<string, unknown> }) => {
      const params: Record<string, unknown> = {};
      for (const field of resourceFields) if (args.input[field] !== undefined) params[field] = args.input[field];
      if (Array.isArray((args.input["Delete"] as { Objects?: unknown } | undefined)?.Objects)) params["Keys"] = (args.input["Delete"] as { Objects: { Key?: string }[] }).Objects.map((o) => o.Key);
      const line = (error?: string): void => {
        // The command's name as the SDK gives it in the context (a class name would not survive minification).
        const call: RecordedCall = { service, operation: (context.commandName ?? "").replace(/Command$/, ""), params, ...(error ? { error } : {}), pid: process.pid };
        appendFileSync(path, `${JSON.stringify(call)}\n`);
      };
      try {
        const out = await next(args);
        line();
        return out;
      } catch (error) {
        line((error as { name?: string }).name ?? "Error");
        throw error;
      }
    };
  client.middlewareStack.add(middleware as never, { step: "initialize", name: "bosunCallLog" });
  return client;
}

/** A local endpoint given in code rather than through AWS_ENDPOINT_URL. */
export interface ExplicitAws {
  endpoint: string;
  region: string;
  /** S3 elsewhere (an S3 that enforces conditional writes, where the SQS/SNS emulator's does not). */
  s3Endpoint?: string;
}

export function destroyAwsClients(clients: AwsClients): void {
  clients.sqs.destroy();
  clients.sns.destroy();
  clients.s3.destroy();
  void clients.ec2.loaded?.then((ec2) => ec2.destroy());
}

/** A value made on first call; `loaded` says whether (and what) it was made, for cleanup. */
function lazy<T>(load: () => Promise<T>): (() => Promise<T>) & { loaded?: Promise<T> } {
  const get: (() => Promise<T>) & { loaded?: Promise<T> } = () => (get.loaded ??= load());
  return get;
}
