import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { App } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { Policy, PolicyStatement } from "aws-cdk-lib/aws-iam";
import { BosunStack, buildApp, nodeRoles, optionsFromContext, parseCombinedRoles } from "../deploy/cdk/src/index.ts";
import { synthesiseCluster, type SynthesisedCluster } from "./helpers/iam.ts";

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;

/** The CDK app of deploy/cdk, synthesised once (cdk-nag's AwsSolutions pack runs in that synthesis) and read back. */
describe("the CDK app", () => {
  let aws: SynthesisedCluster;
  let template: Template;
  let resources: Resources;
  const ofType = (type: string) => Object.values(resources).filter((r) => r.Type === type);

  before(async () => {
    aws = await synthesiseCluster({ cluster: "prod" });
    template = aws.template;
    resources = (template.toJSON() as { Resources: Resources }).Resources;
  });

  it("keeps backups and state in a versioned, encrypted, private bucket that refuses plain HTTP", () => {
    template.hasResource("AWS::S3::Bucket", {
      DeletionPolicy: "Retain",
      Properties: {
        VersioningConfiguration: { Status: "Enabled" },
        BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" } }] },
        PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
        LifecycleConfiguration: {
          Rules: Match.arrayWith([
            Match.objectLike({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 }, Status: "Enabled" }),
            Match.objectLike({ Prefix: "state/", NoncurrentVersionExpiration: { NoncurrentDays: 7 } }),
            Match.objectLike({ Prefix: "backups/", NoncurrentVersionExpiration: { NoncurrentDays: 90 } }),
          ]),
        },
      },
    });
    const statements = aws.bucketPolicy.Statement;
    assert.ok(statements.some((s) => s.Effect === "Deny" && JSON.stringify(s.Condition) === JSON.stringify({ Bool: { "aws:SecureTransport": "false" } })), "plain HTTP is refused");
    assert.ok(statements.some((s) => s.Effect === "Deny" && JSON.stringify(s.Condition).includes("s3:TlsVersion")), "TLS before 1.2 is refused");
    assert.ok(!JSON.stringify(resources).includes("ObjectLockEnabled"), "Object Lock is off unless asked for");
  });

  it("names what the code finds by name, and lets CloudFormation name everything global", () => {
    template.hasResourceProperties("AWS::SNS::Topic", { TopicName: "bosun-prod-bus", KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties("AWS::SQS::Queue", { QueueName: "bosun-prod-coordinator", VisibilityTimeout: 30, ReceiveMessageWaitTimeSeconds: 20, RedrivePolicy: Match.objectLike({ maxReceiveCount: 5 }) });
    template.hasResourceProperties("AWS::SQS::Queue", { QueueName: "bosun-prod-coordinator-dlq", MessageRetentionPeriod: 1209600 });
    // The filter `bosun init` and the coordinator give their subscription.
    template.hasResourceProperties("AWS::SNS::Subscription", { Protocol: "sqs", RawMessageDelivery: true, FilterPolicy: { kind: ["event"] } });
    // IAM names and bucket names are global: a fixed one would stop a second region of the same account.
    for (const r of ofType("AWS::S3::Bucket")) assert.equal(r.Properties["BucketName"], undefined);
    for (const r of ofType("AWS::IAM::Role")) assert.equal(r.Properties["RoleName"], undefined);
    for (const r of ofType("AWS::IAM::InstanceProfile")) assert.equal(r.Properties["InstanceProfileName"], undefined);
    for (const r of ofType("AWS::IAM::ManagedPolicy")) assert.equal(r.Properties["ManagedPolicyName"], undefined);
    assert.equal(ofType("AWS::IAM::Role").length, 6, "web, db, balancer, coordinator, CI, operator");
    assert.equal(ofType("AWS::IAM::InstanceProfile").length, 4);
  });

  it("starts each kind of node from a launch template: the bootstrap with the bucket, IMDSv2, tags the agent reads", () => {
    const bootstrap = readFileSync(new URL("../deploy/user-data/bootstrap.sh", import.meta.url), "utf8");
    const templates = ofType("AWS::EC2::LaunchTemplate");
    assert.equal(templates.length, nodeRoles.length);
    const roles = new Set<string>();
    for (const t of templates) {
      const data = t.Properties["LaunchTemplateData"] as Record<string, unknown>;
      assert.deepEqual(data["MetadataOptions"], { HttpPutResponseHopLimit: 1, HttpTokens: "required", InstanceMetadataTags: "enabled" });
      const userData = JSON.stringify(data["UserData"]);
      // The script's own lines are all there (the bucket line follows its first).
      assert.ok(userData.includes(JSON.stringify(bootstrap.split("\n").slice(1, 30).join("\n")).slice(1, -1)), "user-data is deploy/user-data/bootstrap.sh");
      assert.ok(userData.includes("BOSUN_BUCKET="), "the bucket is set");
      // EC2 takes at most 16 KB of user-data, before base64; a bucket's name is at most 63 characters.
      const parts = ((data["UserData"] as { "Fn::Base64": { "Fn::Join": [string, unknown[]] } })["Fn::Base64"]["Fn::Join"][1]);
      const bytes = parts.reduce((n: number, part) => n + (typeof part === "string" ? Buffer.byteLength(part) : 63), 0);
      assert.ok(bytes < 16384, `user-data is ${bytes} bytes`);
      const tags = (data["TagSpecifications"] as { ResourceType: string; Tags: { Key: string; Value: string }[] }[]).find((s) => s.ResourceType === "instance")!.Tags;
      assert.ok(tags.some((t) => t.Key === "bosun:cluster" && t.Value === "prod"));
      roles.add(tags.find((t) => t.Key === "bosun:role")!.Value);
    }
    assert.deepEqual([...roles].sort(), [...nodeRoles].sort());
  });

  it("lets GitHub Actions of one repository and branch assume the CI role, through OIDC", () => {
    const ci = ofType("AWS::IAM::Role").find((r) => JSON.stringify(r.Properties["AssumeRolePolicyDocument"]).includes("token.actions.githubusercontent.com"));
    assert.ok(ci, "a role trusts GitHub's OIDC provider");
    const trust = JSON.stringify(ci.Properties["AssumeRolePolicyDocument"]);
    assert.ok(trust.includes('"token.actions.githubusercontent.com:sub":["repo:example/shop:ref:refs/heads/main"]'), trust);
    assert.ok(trust.includes('"token.actions.githubusercontent.com:aud":"sts.amazonaws.com"'), trust);
  });

  it("raises an alarm when dead letters wait: the coordinator's DLQ by name, nodes' DLQs by their tags", () => {
    const alarms = ofType("AWS::CloudWatch::Alarm");
    assert.equal(alarms.length, 2);
    template.hasResourceProperties("AWS::CloudWatch::Alarm", { MetricName: "ApproximateNumberOfMessagesVisible", Namespace: "AWS/SQS", Threshold: 0, ComparisonOperator: "GreaterThanThreshold" });
    const query = JSON.stringify(alarms.map((a) => a.Properties["Metrics"]));
    assert.ok(query.includes(`tag.\\"bosun:cluster\\" = 'prod'`) && query.includes(`tag.\\"bosun:kind\\" = 'dead-letter'`), query);
  });

  it("outputs the settings every Bosun process needs", () => {
    const outputs = Object.keys(template.findOutputs("*"));
    for (const name of ["ClusterName", "BucketName", "Region", "TopicArn", "CiRoleArn", "OperatorRoleArn", "WebLaunchTemplateId", "DbInstanceProfileName"]) assert.ok(outputs.includes(name), `output ${name}`);
  });

  it("synthesises with cdk-nag's AwsSolutions checks, and fails on a finding nobody justified", () => {
    // The synthesis in before() passed the checks; a wildcard added without a reason must not.
    const { app, stack } = buildApp({ cluster: "nagged", env: { account: "123456789012", region: "eu-west-1" } });
    stack.cluster.roles.web.addToPrincipalPolicy(new PolicyStatement({ actions: ["s3:GetObject"], resources: [stack.cluster.bucket.arnForObjects("*")] }));
    assert.throws(() => app.synth(), /AwsSolutions-IAM5|[Vv]alidation/);
  });

  it("turns on Object Lock in governance mode when asked, makes kinds of node with several roles, and refuses a bad cluster name", () => {
    const stack = new BosunStack(new App(), "locked", { cluster: { clusterName: "vault", objectLockDays: 30, combinedRoles: parseCombinedRoles("web+balancer") } });
    const locked = Template.fromStack(stack);
    locked.hasResourceProperties("AWS::S3::Bucket", {
      ObjectLockEnabled: true,
      ObjectLockConfiguration: { ObjectLockEnabled: "Enabled", Rule: { DefaultRetention: { Mode: "GOVERNANCE", Days: 30 } } },
    });
    // A web,balancer node: one launch template tagged with both roles, its role granted what each role needs.
    locked.hasResourceProperties("AWS::EC2::LaunchTemplate", {
      LaunchTemplateData: Match.objectLike({ TagSpecifications: Match.arrayWith([Match.objectLike({ ResourceType: "instance", Tags: Match.arrayWith([{ Key: "bosun:role", Value: "web,balancer" }]) })]) }),
    });
    const combined = stack.cluster.nodeKinds.find((k) => k.roles.join(",") === "web,balancer")!;
    const policy = JSON.stringify(stack.resolve((combined.role.node.tryFindChild("DefaultPolicy") as Policy).document));
    for (const action of ["ec2:AssociateAddress", "sns:Publish", "s3:PutObject"]) assert.ok(policy.includes(`"${action}"`), `${action} in ${policy}`);
    assert.equal(policy.split('"sns:Publish"').length, 2, "the agent's grants once");
    assert.throws(() => parseCombinedRoles("web+router"), /combinedRoles: "router" is not a node role/);
    assert.throws(() => new BosunStack(new App(), "bad", { cluster: { clusterName: "Prod_1" } }), /clusterName must be 1-32 of a-z, 0-9 and '-' \(got "Prod_1"\)/);
    // The app's context, checked before anything is built.
    const context = (values: Record<string, string>) => () => optionsFromContext((key) => values[key]);
    assert.throws(context({}), /Set the cluster's name with -c cluster=NAME/);
    assert.throws(context({ cluster: "Prod_1" }), /cluster must be 1-32 of a-z, 0-9 and '-' \(got "Prod_1"\)/);
    assert.throws(context({ cluster: "prod", objectLockDays: "ten" }), /objectLockDays must be a whole number of days from 1 \(got "ten"\)/);
    assert.throws(context({ cluster: "prod", githubRepository: "shop" }), /githubRepository must be OWNER\/NAME \(got "shop"\)/);
    assert.deepEqual(context({ cluster: "prod", combinedRoles: "web+balancer", objectLockDays: "30" })(), { cluster: "prod", objectLockDays: 30, combinedRoles: [["web", "balancer"]] });
  });
});
