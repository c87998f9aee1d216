import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ArnFormat, Duration, RemovalPolicy, Stack, Tags, Validations } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import * as s3 from "aws-cdk-lib/aws-s3";
import * as sns from "aws-cdk-lib/aws-sns";
import * as subscriptions from "aws-cdk-lib/aws-sns-subscriptions";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";

/** The node roles an instance can have (its `bosun:role` tag); the coordinator runs on an instance of its own. */
export const nodeRoles = ["web", "db", "balancer", "coordinator"] as const;
export type NodeRole = (typeof nodeRoles)[number];

/** Who runs `bosun release --wait` from CI: a GitHub Actions workflow through OIDC, or a principal you give. */
export interface GitHubOidc {
  /** `owner/name` of the repository whose workflows may assume the CI role. */
  repository: string;
  /** Refs allowed to release (the token's `sub` is `repo:OWNER/NAME:ref:REF`); default `refs/heads/main`. */
  refs?: string[];
  /** GitHub environments allowed to release (`sub` is `repo:OWNER/NAME:environment:ENV`). */
  environments?: string[];
  /** An existing `token.actions.githubusercontent.com` provider: one per account, so a second cluster reuses the first's. */
  providerArn?: string;
}

export interface BosunClusterProps {
  /** The cluster's name: 1-32 of a-z 0-9 -; the agents' `cluster` setting and the instances' `bosun:cluster` tag. */
  clusterName: string;
  /** EC2 user-data, read when the app is synthesised. */
  userDataFile?: string;
  /** Default: t3.small. */
  instanceType?: ec2.InstanceType;
  /** Default: the latest Debian 12 (amd64) from Debian's public SSM parameter, resolved at deploy time. */
  machineImage?: ec2.IMachineImage;
  /** Days to keep old versions of `state/` objects (node records change often). Default 7. */
  stateVersionDays?: number;
  /** Days to keep old versions of `backups/` objects. Default 90. */
  backupVersionDays?: number;
  /**
   * Turns on S3 Object Lock (governance mode) with this many days of default retention: no
   * object version, backups included, can be deleted before then, even by someone holding the
   * bucket's keys. Only at creation: S3 cannot add Object Lock to this bucket later without support.
   */
  objectLockDays?: number;
  /** Who may assume the CI publisher role: GitHub Actions through OIDC, or any principal. Default: the account (then grant sts:AssumeRole). */
  ci?: { github: GitHubOidc } | { principal: iam.IPrincipal };
  /** Who may assume the operator role. Default: the account (then grant sts:AssumeRole to your on-call engineers' SSO role). */
  operatorPrincipal?: iam.IPrincipal;
  /** Where the dead-letter alarms notify (for example a topic with an e-mail or chat subscription). */
  alarmTopic?: sns.ITopic;
  /** Nodes that hold several roles at once (`[["web", "balancer"]]`): a role, instance profile and launch template each, with the grants of every role it holds. */
  combinedRoles?: NodeRole[][];
}

/** What starts one kind of node: its IAM role, instance profile and launch template (tagged bosun:role=ROLES). */
export interface NodeKind {
  roles: NodeRole[];
  role: iam.Role;
  instanceProfile: iam.InstanceProfile;
  launchTemplate: ec2.LaunchTemplate;
}

const clusterPattern = /^[a-z0-9-]{1,32}$/;

/**
 * One Bosun cluster on AWS: the bus, the bucket, the coordinator's queue and dead-letter queue,
 * an IAM role for each kind of node and for CI and on-call engineers, a launch template per node
 * role, and an alarm on dead letters. Node queues are not here: each agent creates its own.
 *
 * The topic and the coordinator's queues keep the names the code derives from the cluster name
 * (`bosun-CLUSTER-bus`, ...), which are per region; everything global (roles, bucket, instance
 * profiles) is named by CloudFormation, so two regions of one account can each hold a cluster.
 */
export class BosunCluster extends Construct {
  readonly clusterName: string;
  readonly topic: sns.Topic;
  readonly bucket: s3.Bucket;
  readonly coordinatorQueue: sqs.Queue;
  readonly coordinatorDeadLetterQueue: sqs.Queue;
  readonly roles: Record<NodeRole, iam.Role>;
  readonly instanceProfiles: Record<NodeRole, iam.InstanceProfile>;
  readonly launchTemplates: Record<NodeRole, ec2.LaunchTemplate>;
  /** Every kind of node, those of one role and the combined ones. */
  readonly nodeKinds: NodeKind[];
  readonly ciRole: iam.Role;
  readonly operatorRole: iam.Role;
  readonly deadLetterAlarms: cloudwatch.CfnAlarm[];

  constructor(scope: Construct, id: string, props: BosunClusterProps) {
    super(scope, id);
    if (!clusterPattern.test(props.clusterName)) throw new Error(`clusterName must be 1-32 of a-z, 0-9 and '-' (got "${props.clusterName}")`);
    const cluster = (this.clusterName = props.clusterName);
    const stack = Stack.of(this);
    Tags.of(this).add("bosun:cluster", cluster);

    // ---- the bus
    this.topic = new sns.Topic(this, "Bus", {
      // The code finds the topic by this name (CreateTopic returns the existing one's ARN).
      topicName: `bosun-${cluster}-bus`,
      // The AWS managed key: its key policy lets every principal of the account that may use SNS
      // publish, so no role needs a KMS grant, and SNS decrypts before it delivers to the queues.
      masterKey: kms.Alias.fromAliasName(this, "SnsKey", "alias/aws/sns"),
      enforceSSL: true,
    });

    // ---- the bucket: backups/, state/ and dist/
    const lock = props.objectLockDays;
    this.bucket = new s3.Bucket(this, "Bucket", {
      versioned: true,
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      // Backups outlive the stack.
      removalPolicy: RemovalPolicy.RETAIN,
      ...(lock ? { objectLockDefaultRetention: s3.ObjectLockRetention.governance(Duration.days(lock)) } : {}),
      lifecycleRules: [
        { id: "abort-incomplete-multipart-uploads", abortIncompleteMultipartUploadAfter: Duration.days(7) },
        // Node records and the fleet snapshot are rewritten every few seconds: old versions pile up.
        { id: "expire-old-state-versions", prefix: "state/", noncurrentVersionExpiration: Duration.days(props.stateVersionDays ?? 7) },
        { id: "expire-old-backup-versions", prefix: "backups/", noncurrentVersionExpiration: Duration.days(props.backupVersionDays ?? 90) },
      ],
    });
    Validations.of(this.bucket).acknowledge({
      id: "AwsSolutions-S1",
      reason: "Access logging needs a second bucket to write to; CloudTrail data events are the audit trail for this bucket where one is wanted. Every writer here is a Bosun role whose calls are known (test/iam.test.ts).",
    });

    // ---- the coordinator's queue: every event on the bus
    // Names as the coordinator derives them: it brings their attributes to its settings at start.
    this.coordinatorDeadLetterQueue = new sqs.Queue(this, "CoordinatorDeadLetterQueue", {
      queueName: `bosun-${cluster}-coordinator-dlq`,
      // Longer than the source queue's: a message's age counts from its first enqueue.
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.coordinatorQueue = new sqs.Queue(this, "CoordinatorQueue", {
      queueName: `bosun-${cluster}-coordinator`,
      visibilityTimeout: Duration.seconds(30),
      receiveMessageWaitTime: Duration.seconds(20),
      retentionPeriod: Duration.days(4),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.coordinatorDeadLetterQueue, maxReceiveCount: 5 },
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // The same filter `bosun init` and the coordinator use: events only.
    this.topic.addSubscription(
      new subscriptions.SqsSubscription(this.coordinatorQueue, {
        rawMessageDelivery: true,
        filterPolicy: { kind: sns.SubscriptionFilter.stringFilter({ allowlist: ["event"] }) },
      }),
    );

    // ---- IAM, instance profiles and launch templates: one of each per kind of node; CI and on-call
    const userData = readFileSync(props.userDataFile ?? fileURLToPath(new URL("../../user-data/bootstrap.sh", import.meta.url)), "utf8");
    const machineImage = props.machineImage ?? ec2.MachineImage.fromSsmParameter("/aws/service/debian/release/12/latest/amd64", { os: ec2.OperatingSystemType.LINUX });
    const kinds = [...nodeRoles.map((r) => [r]), ...(props.combinedRoles ?? [])];
    this.nodeKinds = kinds.map((roles) => {
      if (roles.length === 0 || new Set(roles).size !== roles.length) throw new Error(`a kind of node needs distinct roles (got ${JSON.stringify(roles)})`);
      const name = roles.map(title).join("");
      const tag = roles.join(",");
      const role = new iam.Role(this, `${name}Role`, { assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com"), description: `Bosun nodes of cluster ${cluster} with bosun:role=${tag}` });
      const instanceProfile = new iam.InstanceProfile(this, `${name}InstanceProfile`, { role });
      const launchTemplate = new ec2.LaunchTemplate(this, `${name}LaunchTemplate`, {
        instanceType: props.instanceType ?? ec2.InstanceType.of(ec2.InstanceClass.T3, ec2.InstanceSize.SMALL),
        machineImage,
        instanceProfile,
        userData: ec2.UserData.custom(withBucket(userData, this.bucket.bucketName)),
        requireImdsv2: true,
        // The bootstrap reads bosun:role and bosun:cluster from instance metadata before any credentials are at hand.
        instanceMetadataTags: true,
        httpPutResponseHopLimit: 1,
        ebsOptimized: true,
        blockDevices: [{ deviceName: "/dev/xvda", volume: ec2.BlockDeviceVolume.ebs(16, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }) }],
        detailedMonitoring: true,
      });
      // The agent reads its roles and cluster from these tags; the template puts them on every instance it starts.
      (launchTemplate.node.defaultChild as ec2.CfnLaunchTemplate).addPropertyOverride("LaunchTemplateData.TagSpecifications", [
        { ResourceType: "instance", Tags: [{ Key: "bosun:role", Value: tag }, { Key: "bosun:cluster", Value: cluster }] },
        { ResourceType: "volume", Tags: [{ Key: "bosun:cluster", Value: cluster }] },
      ]);
      return { roles, role, instanceProfile, launchTemplate };
    });
    const single = <T>(pick: (k: NodeKind) => T) => Object.fromEntries(nodeRoles.map((r, i) => [r, pick(this.nodeKinds[i]!)])) as Record<NodeRole, T>;
    this.roles = single((k) => k.role);
    this.instanceProfiles = single((k) => k.instanceProfile);
    this.launchTemplates = single((k) => k.launchTemplate);
    this.ciRole = new iam.Role(this, "CiPublisherRole", {
      assumedBy: ciPrincipal(this, props.ci),
      description: `Runs bosun release [--wait] for cluster ${cluster} from CI`,
      maxSessionDuration: Duration.hours(1),
    });
    this.operatorRole = new iam.Role(this, "OperatorRole", {
      assumedBy: props.operatorPrincipal ?? new iam.AccountRootPrincipal(),
      description: `On-call engineers of cluster ${cluster}: bosun backup, restore, rollback, nodes`,
    });
    grantPolicies(this, { cluster, stack });

    // ---- dead letters reach a person
    this.deadLetterAlarms = deadLetterAlarms(this, cluster, props.alarmTopic);
  }
}

/** A resource as cdk-nag names it in a finding: `<Logical.Attr>` for tokens, `<var>` for policy variables. */
function nagText(value: unknown): string {
  if (typeof value === "string") return value.replace(/\$\{([^}]+)\}/g, "<$1>");
  if (Array.isArray(value)) return value.map(nagText).join("");
  const intrinsic = value as Record<string, unknown>;
  if ("Ref" in intrinsic) return `<${String(intrinsic["Ref"])}>`;
  if ("Fn::GetAtt" in intrinsic) return `<${(intrinsic["Fn::GetAtt"] as string[]).join(".")}>`;
  if ("Fn::Join" in intrinsic) {
    const [separator, parts] = intrinsic["Fn::Join"] as [string, unknown[]];
    return parts.map(nagText).join(separator);
  }
  throw new Error(`cannot show ${JSON.stringify(value)} as cdk-nag does`);
}

function title(role: string): string {
  return role[0]!.toUpperCase() + role.slice(1);
}

/** The bootstrap with the bucket set first thing (an environment value the script reads as its setting). */
function withBucket(script: string, bucketName: string): string {
  const [shebang, ...rest] = script.split("\n");
  if (!shebang?.startsWith("#!")) throw new Error("user-data must start with #!");
  return [shebang, `BOSUN_BUCKET=${bucketName}; export BOSUN_BUCKET`, ...rest].join("\n");
}

function ciPrincipal(scope: Construct, ci: BosunClusterProps["ci"]): iam.IPrincipal {
  if (!ci) return new iam.AccountRootPrincipal();
  if ("principal" in ci) return ci.principal;
  const { repository, refs = ["refs/heads/main"], environments = [], providerArn } = ci.github;
  if (!/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(repository)) throw new Error(`github.repository must be OWNER/NAME (got "${repository}")`);
  const provider = providerArn
    ? iam.OidcProviderNative.fromOidcProviderArn(scope, "GitHubOidc", providerArn)
    : new iam.OidcProviderNative(scope, "GitHubOidc", { url: "https://token.actions.githubusercontent.com", clientIds: ["sts.amazonaws.com"] });
  const subjects = [...refs.map((r) => `repo:${repository}:ref:${r}`), ...environments.map((e) => `repo:${repository}:environment:${e}`)];
  // Exact subjects (a list is any of them): a workflow of another repository, branch or pull request cannot release.
  return new iam.OpenIdConnectPrincipal(provider, {
    StringEquals: { "token.actions.githubusercontent.com:aud": "sts.amazonaws.com", "token.actions.githubusercontent.com:sub": subjects },
  });
}

/**
 * What each role may do, derived from the calls Bosun makes (test/iam.test.ts records them and
 * checks every one against these statements, and the calls no role should make against them).
 */
function grantPolicies(c: BosunCluster, { cluster, stack }: { cluster: string; stack: Stack }): void {
  const bucket = c.bucket;
  const topicArn = c.topic.topicArn;
  const queueArn = (name: string) => stack.formatArn({ service: "sqs", resource: name, arnFormat: ArnFormat.NO_RESOURCE_NAME });
  // Snapshot ARNs name no account (arn:aws:ec2:REGION::snapshot/ID); volumes, instances and Elastic IPs do.
  const ec2Arn = (type: string) => stack.formatArn({ service: "ec2", resource: type, resourceName: "*", ...(type === "snapshot" ? { account: "" } : {}) });
  const subscriptionsArn = `${topicArn}:*`;
  const objects = (...prefixes: string[]) => prefixes.map((p) => bucket.arnForObjects(p));
  /**
   * One statement on the grantee's policy. A resource with a wildcard must say why (`why`), which
   * becomes cdk-nag's acknowledgement of that finding: every suppression carries its reason here.
   */
  const allow = (grantee: iam.Role, actions: string[], resourceArns: string[], options: { conditions?: Record<string, Record<string, unknown>>; why?: string } = {}) => {
    iam.Grant.addToPrincipal({ grantee, actions, resourceArns, ...(options.conditions ? { conditions: options.conditions } : {}) }).assertSuccess();
    for (const arn of resourceArns) {
      const shown = nagText(stack.resolve(arn));
      if (!shown.includes("*")) continue;
      if (!options.why) throw new Error(`${grantee.node.path}: ${actions.join(", ")} on ${shown} has a wildcard and no reason for it`);
      Validations.of(grantee).acknowledge({ id: `AwsSolutions-IAM5[Resource::${shown}]`, reason: options.why });
    }
  };
  const noResourceScope = "This action supports no resource-level permissions: IAM accepts only Resource \"*\" for it.";

  /** The bus: every process finds it by name (CreateTopic answers the existing ARN), publishes, and finds its own subscription. */
  const useBus = (grantee: iam.Role) => {
    c.topic.grantPublish(grantee);
    allow(grantee, ["sns:CreateTopic", "sns:ListSubscriptionsByTopic"], [topicArn]);
    // The service reference gives the topic as these actions' resource; the request names the
    // subscription (the topic's ARN followed by ":<id>", made at Subscribe). Both, so either reading holds.
    allow(grantee, ["sns:SetSubscriptionAttributes", "sns:Unsubscribe"], [topicArn, subscriptionsArn], {
      why: "Subscription ARNs are the bus's ARN plus an id SNS makes at Subscribe; the wildcard covers this bus's subscriptions only.",
    });
  };
  /**
   * Queues of its own kind (named by the cluster and the node, watch or balancer id), subscribed to
   * the bus: created, configured, consumed and removed; dead letters sent by hand to the DLQs.
   * sns:Subscribe only for SQS endpoints of these names.
   */
  const ownQueues = (grantee: iam.Role, kind: string, why: string) => {
    const arn = queueArn(`bosun-${cluster}-${kind}-*`);
    allow(
      grantee,
      ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes", "sqs:TagQueue", "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteQueue"],
      [arn],
      { why },
    );
    allow(grantee, ["sns:Subscribe"], [topicArn], { conditions: { StringEquals: { "sns:Protocol": "sqs" }, StringLike: { "sns:Endpoint": arn } } });
    // Refused messages go to the DLQ by hand (SQS's redrive moves the rest); DLQs only, so nobody feeds another's queue.
    allow(grantee, ["sqs:SendMessage"], [queueArn(`bosun-${cluster}-${kind}-*-dlq`)], { why });
  };
  /** Without s3:ListBucket S3 answers a missing key with 403 instead of 404; a listing shows names, not content. */
  const listBucket = (grantee: iam.Role, prefixes?: string[]) =>
    allow(grantee, ["s3:ListBucket"], [bucket.bucketArn], prefixes ? { conditions: { StringLike: { "s3:prefix": prefixes } } } : {});
  const distribution = (grantee: iam.Role) =>
    allow(grantee, ["s3:GetObject"], objects("dist/*"), { why: "dist/ holds the Bosun release and trust file the bootstrap installs; only administrators write it." });
  const signingKey = (grantee: iam.Role, name: string) =>
    allow(grantee, ["ssm:GetParameter"], [stack.formatArn({ service: "ssm", resource: "parameter", resourceName: `bosun/${cluster}/signing-keys/${name}` })]);

  // A kind of node gets the grants of each role it holds (the agent's once).
  for (const { roles, role } of c.nodeKinds) {
    if (roles.some((r) => r !== "coordinator")) agent(role);
    if (roles.includes("db")) dbNode(role);
    if (roles.includes("balancer")) balancerNode(role);
    if (roles.includes("coordinator")) coordinatorNode(role);
  }

  // -- people and CI: the bus, and watch queues for --wait
  for (const who of [c.ciRole, c.operatorRole]) {
    useBus(who);
    ownQueues(who, "watch", "A --wait makes a watch queue of a random name and removes it when it ends.");
    allow(who, ["s3:GetObject"], objects("state/fleet.json", "state/nodes/*", "state/results/*"), {
      why: "The fleet (who to wait for), the keys nodes registered (to believe their events) and their results, named by node and command.",
    });
    allow(who, ["s3:GetObject"], objects("dist/trust.json"));
  }
  // CI: the desired release of each app, read and written (conditionally) by `bosun release`.
  allow(c.ciRole, ["s3:GetObject", "s3:PutObject"], objects("state/releases/*"), { why: "One desired-release record per app, named by the app." });
  listBucket(c.ciRole, ["state/*"]);
  // On call: state/ (rollback writes the desired release; restore plans), backups read and listed, never deleted.
  allow(c.operatorRole, ["s3:GetObject", "s3:PutObject"], objects("state/*"), { why: "Rollback writes a desired release, restore plans; all signed records under state/ an on-call key may write." });
  allow(c.operatorRole, ["s3:GetObject"], objects("backups/*"), { why: "bosun backup list, show and verify read manifests and check every object's SHA-256." });
  listBucket(c.operatorRole);

  /** Every agent (web, db, balancer): the bus, its queues, state records, its own keys and results. */
  function agent(node: iam.Role): void {
    useBus(node);
    ownQueues(node, "node", "Each agent creates its own queue and DLQ at start, named by its instance id, unknown until the instance runs.");
    allow(node, ["s3:GetObject"], objects("state/*"), {
      why: "Agents read the fleet snapshot, other nodes' registered keys (to believe their events), desired releases, leases and results, all signed records under state/.",
    });
    listBucket(node);
    // Its own prefix only: a node registers its keys under its instance ARN, so it cannot speak for another.
    allow(node, ["s3:PutObject"], objects("state/nodes/${ec2:SourceInstanceARN}/*"), {
      why: "The node's own prefix: ec2:SourceInstanceARN is the instance the role's credentials were issued to.",
    });
    allow(node, ["s3:PutObject"], objects("state/results/*"), {
      why: "A node's signed answer to a command, written once (If-None-Match); the key names the command and node, and IAM has no variable for the bare instance id.",
    });
    distribution(node);
    signingKey(node, "fleet");
    allow(node, ["ec2:DescribeTags"], ["*"], { why: noResourceScope });
  }

  /** db: backups, binary logs, the backup lease, EBS snapshots of its data volume. */
  function dbNode(db: iam.Role): void {
    allow(db, ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"], objects("backups/*"), {
      why: "Snapshots, binary-log segments and manifests are named by snapshot id and server, made at run time.",
    });
    allow(db, ["s3:ListBucketMultipartUploads"], [bucket.bucketArn]);
    // The lease that keeps two backups of one cluster from running at once (taken, renewed, given back).
    allow(db, ["s3:PutObject", "s3:DeleteObject"], objects("state/leases/backup.json"));
    // A promotion names the new primary (signed by that node; every db node reads it to know whether it may ship).
    allow(db, ["s3:PutObject"], objects("state/db/primary.json"));
    const ebs = "EBS snapshots and their volumes are made at run time; creating one needs the cluster's tag, deleting one needs it present.";
    allow(db, ["ec2:CreateSnapshot"], [ec2Arn("volume")], { why: ebs });
    allow(db, ["ec2:CreateSnapshot", "ec2:CreateTags"], [ec2Arn("snapshot")], { conditions: { StringEquals: { "aws:RequestTag/bosun:cluster": cluster } }, why: ebs });
    allow(db, ["ec2:DeleteSnapshot"], [ec2Arn("snapshot")], { conditions: { StringEquals: { "aws:ResourceTag/bosun:cluster": cluster } }, why: ebs });
    allow(db, ["ec2:DescribeSnapshots"], ["*"], { why: noResourceScope });
  }

  /** balancer: its queue of web nodes' comings and goings, the instances behind it, the Elastic IP. */
  function balancerNode(balancer: iam.Role): void {
    ownQueues(balancer, "lb", "A balancer's queue of node-up and node-down events is named by its instance id, made at start.");
    allow(balancer, ["ec2:DescribeInstances", "ec2:DescribeAddresses"], ["*"], { why: noResourceScope });
    // Only balancers move the cluster's Elastic IP, and only between instances of this cluster.
    allow(balancer, ["ec2:AssociateAddress", "ec2:DisassociateAddress"], [ec2Arn("elastic-ip"), ec2Arn("instance")], {
      conditions: { StringEquals: { "aws:ResourceTag/bosun:cluster": cluster } },
      why: "Elastic IPs and instances are chosen at run time; the condition limits both to those tagged with this cluster.",
    });
    targetGroups(balancer);
    // A Route 53 entry point: the record of the pair's name, written by the holder of the pair's lease only.
    allow(balancer, ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"], [stack.formatArn({ service: "route53", region: "", account: "", resource: "hostedzone", resourceName: "*" })], {
      why: "The hosted zone is the operator's, named in the balancer's settings at run time.",
    });
    allow(balancer, ["route53:GetChange"], [stack.formatArn({ service: "route53", region: "", account: "", resource: "change", resourceName: "*" })], { why: "A change's id is made by Route 53 at run time." });
    allow(balancer, ["s3:PutObject", "s3:DeleteObject"], objects("state/leases/lb-*"), { why: "The lease of a balancer pair's entry point, named by the entry point." });
    allow(balancer, ["s3:PutObject"], objects("state/drains/*"), { why: "A balancer's word that it drained a leaving web node, named by that node and the balancer." });
  }

  /**
   * AWS target groups the node-up, drain and node-down events drive (balancer.targetGroup, run by
   * the coordinator or a balancer agent): registering and deregistering only in groups tagged
   * with this cluster.
   */
  function targetGroups(who: iam.Role): void {
    allow(who, ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"], [stack.formatArn({ service: "elasticloadbalancing", resource: "targetgroup", resourceName: "*" })], {
      conditions: { StringEquals: { "aws:ResourceTag/bosun:cluster": cluster } },
      why: "The target group is the operator's (in front of an ALB or NLB), named at run time; the condition limits it to groups tagged with this cluster.",
    });
    allow(who, ["elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTargetGroups"], ["*"], { why: noResourceScope });
  }

  /** The coordinator: its queues, the fleet's records, schedules, sweeping what gone nodes and CLIs left. */
  function coordinatorNode(coordinator: iam.Role): void {
    useBus(coordinator);
    c.coordinatorQueue.grantConsumeMessages(coordinator);
    c.coordinatorDeadLetterQueue.grantSendMessages(coordinator);
    // It brings its queues to its settings at start and re-applies its subscription's filter.
    allow(coordinator, ["sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:TagQueue"], [c.coordinatorQueue.queueArn, c.coordinatorDeadLetterQueue.queueArn]);
    allow(coordinator, ["sns:Subscribe"], [topicArn], { conditions: { StringEquals: { "sns:Protocol": "sqs", "sns:Endpoint": c.coordinatorQueue.queueArn } } });
    // Queues left behind (watch queues of killed CLIs, gone nodes'): listed by prefix, read for tags, removed.
    allow(coordinator, ["sqs:ListQueues"], ["*"], { why: noResourceScope });
    for (const kind of ["watch", "node", "lb"]) {
      allow(coordinator, ["sqs:ListQueueTags", "sqs:GetQueueAttributes", "sqs:DeleteQueue"], [queueArn(`bosun-${cluster}-${kind}-*`)], {
        why: "Queues of CLIs and nodes that are gone, named at run time; the coordinator removes them after their expiry or grace period.",
      });
    }
    allow(coordinator, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], objects("state/*"), {
      why: "The coordinator keeps the fleet snapshot, its lease and schedules, and removes records of nodes that are gone, all under state/.",
    });
    allow(coordinator, ["s3:GetObject"], objects("backups/*"), { why: "Retention and drill schedules read the backups' manifests." });
    listBucket(coordinator);
    distribution(coordinator);
    signingKey(coordinator, "coordinator");
    allow(coordinator, ["ec2:DescribeTags"], ["*"], { why: noResourceScope });
    targetGroups(coordinator);
  }
}

/**
 * Dead letters are refused messages a person must read. Node DLQs are made by agents at run
 * time, so no alarm can name them here, and CloudWatch alarms accept neither SEARCH() nor a
 * wildcard in a Metrics Insights WHERE (only = and !=). Two alarms, then:
 * the coordinator's DLQ by name; and a Metrics Insights query over every SQS queue tagged
 * `bosun:cluster=CLUSTER` and `bosun:kind=dead-letter`, which needs the account's
 * "resource tags for telemetry" switched on in CloudWatch settings (deploy/README.md).
 */
function deadLetterAlarms(c: BosunCluster, cluster: string, alarmTopic: sns.ITopic | undefined): cloudwatch.CfnAlarm[] {
  const actions = alarmTopic ? { alarmActions: [alarmTopic.topicArn], okActions: [alarmTopic.topicArn] } : {};
  const coordinator = new cloudwatch.Alarm(c, "CoordinatorDeadLetterAlarm", {
    alarmDescription: `Bosun ${cluster}: events the coordinator refused are waiting in ${c.coordinatorDeadLetterQueue.queueName}`,
    metric: c.coordinatorDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: "Maximum" }),
    threshold: 0,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  const query = (metric: string) =>
    `SELECT MAX(${metric}) FROM "AWS/SQS" WHERE tag."bosun:cluster" = '${cluster}' AND tag."bosun:kind" = 'dead-letter'`;
  const nodes = new cloudwatch.CfnAlarm(c, "NodeDeadLetterAlarm", {
    alarmDescription: `Bosun ${cluster}: a node's dead-letter queue holds a refused command, or one SQS gave up on (tag bosun:kind=dead-letter)`,
    comparisonOperator: "GreaterThanThreshold",
    threshold: 0,
    evaluationPeriods: 1,
    treatMissingData: "notBreaching",
    metrics: [{ id: "deadLetters", expression: query("ApproximateNumberOfMessagesVisible"), period: 300, returnData: true }],
    ...actions,
  });
  if (alarmTopic) {
    const cfn = coordinator.node.defaultChild as cloudwatch.CfnAlarm;
    cfn.alarmActions = [alarmTopic.topicArn];
    cfn.okActions = [alarmTopic.topicArn];
  }
  return [coordinator.node.defaultChild as cloudwatch.CfnAlarm, nodes];
}
