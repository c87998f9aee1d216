import { CfnOutput, Stack, type StackProps } from "aws-cdk-lib";
import type { Construct } from "constructs";
import { BosunCluster, type BosunClusterProps } from "./cluster.ts";

/**
 * A stack holding one cluster, with the outputs a node, CI and an on-call engineer need: the
 * agents' settings (`BOSUN_CLUSTER`, `BOSUN_BUCKET`, `AWS_REGION`), the roles to assume, and what
 * to start instances from.
 */
export class BosunStack extends Stack {
  readonly cluster: BosunCluster;

  constructor(scope: Construct, id: string, props: StackProps & { cluster: BosunClusterProps }) {
    super(scope, id, props);
    const cluster = (this.cluster = new BosunCluster(this, "Cluster", props.cluster));
    const out = (id: string, value: string, description: string) => new CfnOutput(this, id, { value, description });
    out("ClusterName", cluster.clusterName, "BOSUN_CLUSTER (cluster) for every Bosun process, and the bosun:cluster tag of its instances");
    out("BucketName", cluster.bucket.bucketName, "BOSUN_BUCKET (bucket) for every Bosun process");
    out("Region", this.region, "AWS_REGION for every Bosun process");
    out("TopicArn", cluster.topic.topicArn, "The bus (found by name by every process)");
    out("CoordinatorQueueUrl", cluster.coordinatorQueue.queueUrl, "The coordinator's queue");
    out("CoordinatorDeadLetterQueueUrl", cluster.coordinatorDeadLetterQueue.queueUrl, "Events the coordinator refused");
    out("CiRoleArn", cluster.ciRole.roleArn, "The role CI assumes to run bosun release --wait");
    out("OperatorRoleArn", cluster.operatorRole.roleArn, "The role on-call engineers assume");
    for (const kind of cluster.nodeKinds) {
      const name = kind.roles.map((r) => r[0]!.toUpperCase() + r.slice(1)).join("");
      const tag = kind.roles.join(",");
      out(`${name}LaunchTemplateId`, kind.launchTemplate.launchTemplateId!, `Launch template for ${tag} nodes (tags bosun:role=${tag})`);
      out(`${name}InstanceProfileName`, kind.instanceProfile.instanceProfileName, `Instance profile of ${tag} nodes`);
    }
  }
}
