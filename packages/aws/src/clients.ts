import { SQSClient } from "@aws-sdk/client-sqs";
import { SNSClient } from "@aws-sdk/client-sns";
import { S3Client } from "@aws-sdk/client-s3";
import type { EC2Client } from "@aws-sdk/client-ec2";

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
  return {
    sqs: new SQSClient({ ...base, useQueueUrlAsEndpoint: !local("SQS") }),
    sns: new SNSClient(base),
    s3: new S3Client({ ...base, ...(explicit?.s3Endpoint ? { endpoint: explicit.s3Endpoint } : {}), forcePathStyle: local("S3") }),
    ec2: lazy(async () => new (await import("@aws-sdk/client-ec2")).EC2Client(base)),
  };
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
