import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "./web.ts";
import { onPath } from "./tools.ts";
import { ChildServer } from "./process.ts";
import { AllocateAddressCommand, CreateSubnetCommand, CreateVpcCommand, DescribeAddressesCommand, EC2Client, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { CreateHostedZoneCommand, ListResourceRecordSetsCommand, Route53Client } from "@aws-sdk/client-route-53";
import { CreateTargetGroupCommand, DescribeTargetHealthCommand, ElasticLoadBalancingV2Client, ModifyTargetGroupAttributesCommand } from "@aws-sdk/client-elastic-load-balancing-v2";

/** Why moto cannot run here, or undefined when it can. */
export function motoMissing(): string | undefined {
  return onPath("moto_server") ? undefined : "moto_server not found: install Python's moto with its server (pip install 'moto[server]')";
}

/**
 * Python's moto as a server on a free 127.0.0.1 port, for what the SQS/SNS/S3 emulator does not
 * do as AWS does: S3 conditional writes (If-Match, If-None-Match), EC2, Route 53, ELBv2, IAM.
 */
export class Moto extends ChildServer {
  readonly endpoint: string;

  private constructor(endpoint: string, child: ChildProcess) {
    super(child);
    this.endpoint = endpoint;
  }

  static async start(env: Record<string, string> = {}): Promise<Moto> {
    const missing = motoMissing();
    if (missing) throw new Error(missing);
    const port = await freePort();
    const child = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port)], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, MOTO_EC2_LOAD_DEFAULT_AMIS: "false", ...env },
    });
    const stderr: string[] = [];
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
    const moto = new Moto(`http://127.0.0.1:${port}`, child);
    // Ready when its own API answers; it can take seconds on a loaded machine.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`moto_server exited with ${child.exitCode}: ${stderr.join("").slice(-500)}`);
      const ready = await fetch(`${moto.endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) return moto;
      await new Promise((r) => setTimeout(r, 100));
    }
    await moto.stop();
    throw new Error(`moto_server did not answer within 60 s: ${stderr.join("").slice(-500)}`);
  }
}

/** EC2 and ELBv2 resources made in moto through the real SDK, as an account would have them. */
export class MotoAccount {
  readonly ec2: EC2Client;
  readonly elbv2: ElasticLoadBalancingV2Client;
  readonly route53: Route53Client;

  constructor(endpoint: string) {
    const config = { endpoint, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" } };
    this.ec2 = new EC2Client(config);
    this.elbv2 = new ElasticLoadBalancingV2Client(config);
    this.route53 = new Route53Client(config);
  }

  /** A public hosted zone; its id without the "/hostedzone/" prefix, as Bosun's settings take it. */
  async hostedZone(name: string): Promise<string> {
    const out = await this.route53.send(new CreateHostedZoneCommand({ Name: name, CallerReference: `${name}-${Date.now()}` }));
    return out.HostedZone!.Id!.replace(/^\/hostedzone\//, "");
  }

  /** The values of an A record now. */
  async aRecord(zoneId: string, name: string): Promise<string[]> {
    const out = await this.route53.send(new ListResourceRecordSetsCommand({ HostedZoneId: zoneId }));
    const set = out.ResourceRecordSets?.find((r) => r.Name === (name.endsWith(".") ? name : `${name}.`) && r.Type === "A");
    return (set?.ResourceRecords ?? []).map((r) => r.Value ?? "");
  }

  /** A VPC with one subnet, both in `cidr` (a /16; the subnet is its first /24). */
  async network(cidr = "10.0.0.0/16"): Promise<{ vpcId: string; subnetId: string }> {
    const vpc = await this.ec2.send(new CreateVpcCommand({ CidrBlock: cidr }));
    const vpcId = vpc.Vpc!.VpcId!;
    const subnet = await this.ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: cidr.replace(/\.0\.0\/16$/, ".1.0/24") }));
    return { vpcId, subnetId: subnet.Subnet!.SubnetId! };
  }

  /** Running instances in a subnet: their ids are the nodes' ids. */
  async instances(subnetId: string, count: number): Promise<string[]> {
    const out = await this.ec2.send(new RunInstancesCommand({ ImageId: "ami-12c6146b", InstanceType: "t3.micro", MinCount: count, MaxCount: count, SubnetId: subnetId }));
    return out.Instances!.map((i) => i.InstanceId!);
  }

  /** A target group of instances on port 80 with a short deregistration delay. */
  async targetGroup(vpcId: string, name: string, delaySeconds = 5): Promise<string> {
    const out = await this.elbv2.send(new CreateTargetGroupCommand({ Name: name, Protocol: "HTTP", Port: 80, VpcId: vpcId, TargetType: "instance" }));
    const arn = out.TargetGroups![0]!.TargetGroupArn!;
    await this.elbv2.send(new ModifyTargetGroupAttributesCommand({ TargetGroupArn: arn, Attributes: [{ Key: "deregistration_delay.timeout_seconds", Value: String(delaySeconds) }] }));
    return arn;
  }

  /** The group's targets: id, port, state. */
  async targets(arn: string): Promise<{ id: string; port: number; state: string }[]> {
    const out = await this.elbv2.send(new DescribeTargetHealthCommand({ TargetGroupArn: arn }));
    return (out.TargetHealthDescriptions ?? []).map((d) => ({ id: d.Target!.Id!, port: d.Target!.Port!, state: d.TargetHealth?.State ?? "" }));
  }

  /** An Elastic IP allocation, not associated. */
  async elasticIp(): Promise<{ allocationId: string; publicIp: string }> {
    const out = await this.ec2.send(new AllocateAddressCommand({ Domain: "vpc" }));
    return { allocationId: out.AllocationId!, publicIp: out.PublicIp! };
  }

  /** The instance an Elastic IP is associated with now, if any. */
  async holder(allocationId: string): Promise<string | undefined> {
    const out = await this.ec2.send(new DescribeAddressesCommand({ AllocationIds: [allocationId] }));
    return out.Addresses?.[0]?.InstanceId || undefined;
  }

  close(): void {
    this.ec2.destroy();
    this.elbv2.destroy();
    this.route53.destroy();
  }
}
