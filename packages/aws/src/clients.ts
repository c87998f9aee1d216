import { SQSClient } from "@aws-sdk/client-sqs";
import { SNSClient } from "@aws-sdk/client-sns";
import { S3Client } from "@aws-sdk/client-s3";
import { EC2Client } from "@aws-sdk/client-ec2";

export interface AwsClients {
  sqs: SQSClient;
  sns: SNSClient;
  s3: S3Client;
  ec2: EC2Client;
}

/**
 * The SDK clients, configured by the SDK's own means (AWS_REGION, AWS_ENDPOINT_URL,
 * the default credential chain). Against a local endpoint two SDK options matter:
 * queue URLs name a host of their own that only AWS resolves, and buckets go in the path.
 */
export function createAwsClients(env: NodeJS.ProcessEnv = process.env): AwsClients {
  const local = (service: string) => Boolean(env["AWS_ENDPOINT_URL"] || env[`AWS_ENDPOINT_URL_${service}`]);
  return {
    sqs: new SQSClient({ useQueueUrlAsEndpoint: !local("SQS") }),
    sns: new SNSClient({}),
    s3: new S3Client({ forcePathStyle: local("S3") }),
    ec2: new EC2Client({}),
  };
}

export function destroyAwsClients(clients: AwsClients): void {
  clients.sqs.destroy();
  clients.sns.destroy();
  clients.s3.destroy();
  clients.ec2.destroy();
}
