import { App, Validations, type Environment } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";
import { BosunStack } from "./stack.ts";
import { nodeRoles, type BosunClusterProps, type NodeRole } from "./cluster.ts";

export interface AppOptions {
  /** The cluster's name (`-c cluster=prod`). */
  cluster: string;
  /** `owner/name` whose GitHub Actions may assume the CI role (`-c githubRepository=...`); otherwise the account may. */
  githubRepository?: string;
  /** An existing GitHub OIDC provider's ARN (`-c githubOidcProviderArn=...`): one per account. */
  githubOidcProviderArn?: string;
  /** Kinds of node with several roles (`-c combinedRoles=web+balancer,db+coordinator`). */
  combinedRoles?: NodeRole[][];
  /** Days of S3 Object Lock (`-c objectLockDays=30`), only when the bucket is created. */
  objectLockDays?: number;
  env?: Environment;
  outdir?: string;
}

/** The app `cdk synth` and `cdk deploy` run, with AWS Solutions checks from cdk-nag on every resource. */
export function buildApp(options: AppOptions, app: App = new App(options.outdir ? { outdir: options.outdir } : {})): { app: App; stack: BosunStack } {
  const cluster: BosunClusterProps = {
    clusterName: options.cluster,
    ...(options.githubRepository ? { ci: { github: { repository: options.githubRepository, ...(options.githubOidcProviderArn ? { providerArn: options.githubOidcProviderArn } : {}) } } } : {}),
    ...(options.objectLockDays ? { objectLockDays: options.objectLockDays } : {}),
    ...(options.combinedRoles ? { combinedRoles: options.combinedRoles } : {}),
  };
  const stack = new BosunStack(app, `bosun-${options.cluster}`, { cluster, ...(options.env ? { env: options.env } : {}), description: `Bosun cluster ${options.cluster}` });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

/** `web+balancer,db+coordinator` as kinds of node; a role that is not one of Bosun's is refused by name. */
export function parseCombinedRoles(text: string): NodeRole[][] {
  return text.split(",").map((kind) =>
    kind.split("+").map((role) => {
      if (!(nodeRoles as readonly string[]).includes(role)) throw new Error(`combinedRoles: "${role}" is not a node role (${nodeRoles.join(", ")})`);
      return role as NodeRole;
    }),
  );
}
