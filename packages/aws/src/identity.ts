import { AwsError, namePattern } from "@bosun/core";
import type { AwsClients } from "./clients.ts";

export interface NodeIdentity {
  nodeId: string;
  roles: string[];
  /** Where the identity came from, for the log. */
  source: "flags" | "ec2";
  cluster?: string;
}

export const ROLE_TAG = "bosun:role";
export const CLUSTER_TAG = "bosun:cluster";

/**
 * On EC2: the instance id from IMDSv2 (token required; AWS_EC2_METADATA_SERVICE_ENDPOINT
 * is honoured) and the roles from the instance's `bosun:role` tag (comma separated).
 */
export async function identityFromEc2(clients: AwsClients, options: { timeoutMs?: number } = {}): Promise<NodeIdentity> {
  // Loaded here, not at start: off EC2 these modules are dead weight in every agent.
  const { MetadataService } = await import("@aws-sdk/ec2-metadata-service");
  const { DescribeTagsCommand } = await import("@aws-sdk/client-ec2");
  const imds = new MetadataService({ ec2MetadataV1Disabled: true, httpOptions: { timeout: options.timeoutMs ?? 2000 }, retries: 2 });
  let nodeId: string;
  try {
    nodeId = (await imds.request("/latest/meta-data/instance-id", {})).trim();
  } catch (cause) {
    throw new AwsError(
      `Cannot read the instance id from EC2 instance metadata (IMDSv2): ${(cause as Error).message}. Off EC2, pass --node-id and --role.`,
      { cause },
    );
  }
  const out = await (await clients.ec2()).send(new DescribeTagsCommand({ Filters: [{ Name: "resource-id", Values: [nodeId] }] }));
  const tags = new Map((out.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""]));
  const roles = (tags.get(ROLE_TAG) ?? "").split(",").map((r) => r.trim()).filter(Boolean);
  if (roles.length === 0) throw new AwsError(`Instance ${nodeId} has no "${ROLE_TAG}" tag; tag it with its roles, for example "web".`);
  for (const role of roles) {
    if (!namePattern.test(role)) throw new AwsError(`Instance ${nodeId} has a bad role "${role}" in its "${ROLE_TAG}" tag`);
  }
  const cluster = tags.get(CLUSTER_TAG);
  return { nodeId, roles, source: "ec2", ...(cluster ? { cluster } : {}) };
}
