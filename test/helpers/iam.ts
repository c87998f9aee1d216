import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Template } from "aws-cdk-lib/assertions";
import type { CfnElement } from "aws-cdk-lib";
import { runSimulation } from "@cloud-copilot/iam-simulate";
import type { RecordedCall } from "@bosun/aws";
import { buildApp, nodeRoles, type BosunStack } from "../../deploy/cdk/src/index.ts";

/** Who calls AWS in Bosun: the node roles, CI and on-call engineers. */
export const principals = [...nodeRoles, "ci", "operator"] as const;
export type Principal = (typeof principals)[number];

export interface PolicyDocument {
  Version: string;
  Statement: Statement[];
}
export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, unknown>>;
}

/** One request as IAM sees it: action, resource and the context keys the policies may test. */
export interface IamRequest {
  action: string;
  resource: string;
  context: Record<string, string | string[]>;
}

/** The synthesised cluster, its intrinsic functions resolved to the values a deployment would have. */
export interface SynthesisedCluster {
  stack: BosunStack;
  template: Template;
  account: string;
  region: string;
  cluster: string;
  bucket: string;
  topicArn: string;
  /** Each principal's identity policies, as deployed. */
  policies: Record<Principal, PolicyDocument[]>;
  bucketPolicy: PolicyDocument;
  roleArn: Record<Principal, string>;
}

/**
 * Synthesises the app (with cdk-nag's AwsSolutions checks, which fail the synthesis on any
 * finding not acknowledged) for a fixed account and region, and resolves every policy.
 */
export async function synthesiseCluster(options: { cluster?: string; account?: string; region?: string } = {}): Promise<SynthesisedCluster> {
  const cluster = options.cluster ?? "prod";
  const account = options.account ?? "123456789012";
  const region = options.region ?? "eu-west-1";
  const outdir = await mkdtemp(join(tmpdir(), "bosun-cdk-"));
  try {
    const { app, stack } = buildApp({ cluster, env: { account, region }, outdir, githubRepository: "example/shop" });
    app.synth();
    const template = Template.fromStack(stack);
    const json = template.toJSON() as { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };
    const bucket = `bosun-${cluster}-bucket-test`;
    const refs = new Map<string, { ref: string; attrs: Record<string, string> }>();
    for (const [id, resource] of Object.entries(json.Resources)) {
      const p = resource.Properties ?? {};
      if (resource.Type === "AWS::S3::Bucket") refs.set(id, { ref: bucket, attrs: { Arn: `arn:aws:s3:::${bucket}` } });
      if (resource.Type === "AWS::SNS::Topic") refs.set(id, { ref: `arn:aws:sns:${region}:${account}:${String(p["TopicName"])}`, attrs: {} });
      if (resource.Type === "AWS::SQS::Queue") {
        const name = String(p["QueueName"]);
        refs.set(id, { ref: `https://sqs.${region}.amazonaws.com/${account}/${name}`, attrs: { Arn: `arn:aws:sqs:${region}:${account}:${name}`, QueueName: name } });
      }
      if (resource.Type === "AWS::IAM::Role") refs.set(id, { ref: id, attrs: { Arn: `arn:aws:iam::${account}:role/${id}` } });
    }
    const resolve = (value: unknown): unknown => {
      if (Array.isArray(value)) return value.map(resolve);
      if (!value || typeof value !== "object") return value;
      const o = value as Record<string, unknown>;
      if ("Ref" in o) {
        const ref = String(o["Ref"]);
        if (ref === "AWS::Partition") return "aws";
        if (ref === "AWS::Region") return region;
        if (ref === "AWS::AccountId") return account;
        if (ref === "AWS::URLSuffix") return "amazonaws.com";
        const found = refs.get(ref);
        if (!found) throw new Error(`cannot resolve Ref ${ref}`);
        return found.ref;
      }
      if ("Fn::GetAtt" in o) {
        const [id, attr] = o["Fn::GetAtt"] as [string, string];
        const found = refs.get(id)?.attrs[attr];
        if (!found) throw new Error(`cannot resolve GetAtt ${id}.${attr}`);
        return found;
      }
      if ("Fn::Join" in o) {
        const [sep, parts] = o["Fn::Join"] as [string, unknown[]];
        return parts.map(resolve).join(sep);
      }
      return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, resolve(v)]));
    };
    const logicalId = (role: { node: { defaultChild?: unknown } }) => stack.getLogicalId(role.node.defaultChild as CfnElement);
    const roleIds: Record<Principal, string> = {
      web: logicalId(stack.cluster.roles.web),
      db: logicalId(stack.cluster.roles.db),
      balancer: logicalId(stack.cluster.roles.balancer),
      coordinator: logicalId(stack.cluster.roles.coordinator),
      ci: logicalId(stack.cluster.ciRole),
      operator: logicalId(stack.cluster.operatorRole),
    };
    const policies = Object.fromEntries(principals.map((p) => [p, [] as PolicyDocument[]])) as Record<Principal, PolicyDocument[]>;
    let bucketPolicy: PolicyDocument | undefined;
    for (const resource of Object.values(json.Resources)) {
      if (resource.Type === "AWS::IAM::Policy" || resource.Type === "AWS::IAM::ManagedPolicy") {
        const attached = (resource.Properties["Roles"] as { Ref: string }[] | undefined) ?? [];
        for (const { Ref } of attached) {
          const who = principals.find((p) => roleIds[p] === Ref);
          if (who) policies[who].push(resolve(resource.Properties["PolicyDocument"]) as PolicyDocument);
        }
      }
      if (resource.Type === "AWS::S3::BucketPolicy") bucketPolicy = resolve(resource.Properties["PolicyDocument"]) as PolicyDocument;
    }
    const roleArn = Object.fromEntries(principals.map((p) => [p, `arn:aws:iam::${account}:role/${roleIds[p]}`])) as Record<Principal, string>;
    return { stack, template, account, region, cluster, bucket, topicArn: `arn:aws:sns:${region}:${account}:bosun-${cluster}-bus`, policies, bucketPolicy: bucketPolicy!, roleArn };
  } finally {
    await rm(outdir, { recursive: true, force: true });
  }
}

/** Where the recorded calls were made (a test fleet), to be moved onto the synthesised cluster's names. */
export interface RecordedPlace {
  cluster: string;
  bucket: string;
}

/**
 * The IAM requests one recorded SDK call makes, on the synthesised cluster's account, region,
 * bucket and cluster name. Unknown operations throw: a new kind of call must be mapped here
 * (and granted) before it can pass.
 */
export function iamRequests(call: RecordedCall, from: RecordedPlace, to: SynthesisedCluster): IamRequest[] {
  const p = call.params;
  const str = (key: string) => (typeof p[key] === "string" ? (p[key] as string) : undefined);
  // Names carry the test's cluster; ARNs the emulator's account and region.
  const rename = (name: string) => name.replaceAll(`bosun-${from.cluster}-`, `bosun-${to.cluster}-`);
  const arnOf = (arn: string) => rename(arn).replace(/^arn:aws:(sns|sqs|ec2):[^:]*:[0-9]*:/, `arn:aws:$1:${to.region}:${to.account}:`);
  const queueArn = (urlOrName: string) => `arn:aws:sqs:${to.region}:${to.account}:${rename(urlOrName.split("/").pop()!)}`;
  const bucketArn = () => {
    if (str("Bucket") !== from.bucket) throw new Error(`${call.operation} on bucket ${str("Bucket")}, not the cluster's`);
    return `arn:aws:s3:::${to.bucket}`;
  };
  // Keys under state/nodes/ name the node's instance ARN, with the emulator's account and region.
  const object = (key = str("Key")) => `${bucketArn()}/${key!.replace(/arn:aws:ec2:[^:]*:[0-9]*:/, `arn:aws:ec2:${to.region}:${to.account}:`)}`;
  // Snapshot ARNs name no account.
  const ec2 = (type: string, id: string) => `arn:aws:ec2:${to.region}:${type === "snapshot" ? "" : to.account}:${type}/${id}`;
  const one = (action: string, resource: string, context: Record<string, string | string[]> = {}): IamRequest[] => [{ action, resource, context }];

  switch (`${call.service}:${call.operation}`) {
    case "s3:GetObject":
    case "s3:HeadObject":
      return one("s3:GetObject", object());
    case "s3:PutObject":
    case "s3:CreateMultipartUpload":
    case "s3:UploadPart":
    case "s3:CompleteMultipartUpload":
      return one("s3:PutObject", object());
    case "s3:AbortMultipartUpload":
      return one("s3:AbortMultipartUpload", object());
    case "s3:DeleteObject":
      return one("s3:DeleteObject", object());
    case "s3:DeleteObjects":
      return ((p["Keys"] as string[] | undefined) ?? []).map((key) => ({ action: "s3:DeleteObject", resource: object(key), context: {} }));
    case "s3:ListObjectsV2":
      return one("s3:ListBucket", bucketArn(), { "s3:prefix": str("Prefix") ?? "" });
    case "s3:HeadBucket":
      return one("s3:ListBucket", bucketArn());
    case "s3:ListMultipartUploads":
      return one("s3:ListBucketMultipartUploads", bucketArn(), { "s3:prefix": str("Prefix") ?? "" });
    case "s3:CreateBucket":
      return one("s3:CreateBucket", bucketArn());
    case "sns:CreateTopic":
      return one("sns:CreateTopic", `arn:aws:sns:${to.region}:${to.account}:${rename(str("Name")!)}`);
    case "sns:Publish":
    case "sns:ListSubscriptionsByTopic":
      return one(`sns:${call.operation}`, arnOf(str("TopicArn")!));
    case "sns:Subscribe":
      return one("sns:Subscribe", arnOf(str("TopicArn")!), { "sns:Protocol": str("Protocol")!, "sns:Endpoint": arnOf(str("Endpoint")!) });
    case "sns:SetSubscriptionAttributes":
    case "sns:Unsubscribe":
      // The service authorisation reference gives the topic as the resource of these (the subscription's ARN less its id).
      return one(`sns:${call.operation}`, arnOf(str("SubscriptionArn")!).replace(/:[^:]+$/, ""));
    case "sqs:CreateQueue": {
      // Tags given at creation need sqs:TagQueue as well (SQS's documentation on tagging at creation).
      const tags = (p["tags"] ?? {}) as Record<string, string>;
      const requestTags = Object.fromEntries(Object.entries(tags).map(([k, v]) => [`aws:RequestTag/${k}`, k === "bosun:cluster" ? to.cluster : v]));
      const created = one("sqs:CreateQueue", queueArn(str("QueueName")!), requestTags);
      return Object.keys(tags).length > 0 ? [...created, { action: "sqs:TagQueue", resource: created[0]!.resource, context: requestTags }] : created;
    }
    case "sqs:ListQueues":
      return one("sqs:ListQueues", "*");
    case "sqs:GetQueueAttributes":
    case "sqs:SetQueueAttributes":
    case "sqs:TagQueue":
    case "sqs:ListQueueTags":
    case "sqs:ReceiveMessage":
    case "sqs:DeleteMessage":
    case "sqs:DeleteMessageBatch":
    case "sqs:ChangeMessageVisibility":
    case "sqs:ChangeMessageVisibilityBatch":
    case "sqs:SendMessage":
    case "sqs:SendMessageBatch":
    case "sqs:DeleteQueue":
    case "sqs:GetQueueUrl":
      return one(`sqs:${call.operation.replace(/Batch$/, "")}`, queueArn(str("QueueUrl") ?? str("QueueName")!));
    case "ec2:DescribeTags":
    case "ec2:DescribeInstances":
    case "ec2:DescribeSnapshots":
    case "ec2:DescribeAddresses":
      return one(`ec2:${call.operation}`, "*");
    case "ec2:CreateSnapshot": {
      // Tags the snapshot is created with, as the request carries them; CreateTags is needed for them too.
      const specs = (p["TagSpecifications"] ?? []) as { Tags?: { Key?: string; Value?: string }[] }[];
      const tags = Object.fromEntries(specs.flatMap((t) => t.Tags ?? []).map((t) => [`aws:RequestTag/${t.Key}`, t.Key === "bosun:cluster" ? to.cluster : (t.Value ?? "")]));
      return [
        { action: "ec2:CreateSnapshot", resource: ec2("volume", str("VolumeId")!), context: {} },
        { action: "ec2:CreateSnapshot", resource: ec2("snapshot", "*"), context: tags },
        ...(specs.length > 0 ? [{ action: "ec2:CreateTags", resource: ec2("snapshot", "*"), context: { ...tags, "ec2:CreateAction": "CreateSnapshot" } }] : []),
      ];
    }
    case "ec2:AssociateAddress":
    case "ec2:DisassociateAddress": {
      // The cluster's Elastic IP and instances carry its tag (the launch templates tag instances; the operator tags the address).
      const tagged = { "aws:ResourceTag/bosun:cluster": to.cluster };
      const address = str("AllocationId") ? [{ action: `ec2:${call.operation}`, resource: ec2("elastic-ip", str("AllocationId")!), context: tagged }] : [];
      const instance = str("InstanceId") ? [{ action: `ec2:${call.operation}`, resource: ec2("instance", str("InstanceId")!), context: tagged }] : [];
      // DisassociateAddress names an association, not the address: check it against any of the cluster's addresses.
      return address.length + instance.length > 0 ? [...address, ...instance] : [{ action: `ec2:${call.operation}`, resource: ec2("elastic-ip", "*"), context: tagged }];
    }
    case "ec2:DeleteSnapshot":
      // Snapshots Bosun makes carry the cluster's tag (packages/agent/src/roles/db/ebs.ts).
      return one("ec2:DeleteSnapshot", ec2("snapshot", str("SnapshotId")!), { "aws:ResourceTag/bosun:cluster": to.cluster });
    default:
      throw new Error(`no IAM mapping for ${call.service}:${call.operation}; add it to test/helpers/iam.ts`);
  }
}

export type Decision = "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied";

/**
 * Evaluates a request against a principal's identity policies (and the bucket policy for S3),
 * over TLS, as IAM would; a request the simulator cannot even evaluate (an action that does not
 * exist, a resource of the wrong type) throws.
 */
export async function decide(cluster: SynthesisedCluster, who: Principal, request: IamRequest, policies = cluster.policies[who]): Promise<Decision> {
  const context: Record<string, string | string[]> = { "aws:SecureTransport": "true", ...request.context };
  const result = await runSimulation(
    {
      request: { principal: cluster.roleArn[who], action: request.action, resource: { resource: request.resource, accountId: cluster.account }, contextVariables: context },
      identityPolicies: policies.map((policy, i) => ({ name: `${who}-${i}`, policy })),
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      ...(request.action.startsWith("s3:") ? { resourcePolicy: cluster.bucketPolicy } : {}),
    },
    {},
  );
  if (result.resultType === "error") throw new Error(`cannot simulate ${request.action} on ${request.resource}: ${JSON.stringify(result.errors)}`);
  return result.overallResult as Decision;
}

/** The calls a recorder wrote (BOSUN_AWS_CALL_LOG), one JSON object a line; none when the file is missing. */
export async function readCalls(path: string): Promise<RecordedCall[]> {
  const text = await readFile(path, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as RecordedCall);
}

/** A principal's policies with one statement left out, to show that a recorded call depends on it. */
export function without(policies: PolicyDocument[], drop: (s: Statement) => boolean): PolicyDocument[] {
  return policies.map((doc) => ({ ...doc, Statement: doc.Statement.filter((s) => !drop(s)) }));
}
