import { App, Validations, type Environment } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";
import { BosunStack } from "./stack.ts";
import type { BosunClusterProps } from "./cluster.ts";

export interface AppOptions {
  /** The cluster's name (`-c cluster=prod`). */
  cluster: string;
  /** `owner/name` whose GitHub Actions may assume the CI role (`-c githubRepository=...`); otherwise the account may. */
  githubRepository?: string;
  /** An existing GitHub OIDC provider's ARN (`-c githubOidcProviderArn=...`): one per account. */
  githubOidcProviderArn?: string;
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
  };
  const stack = new BosunStack(app, `bosun-${options.cluster}`, { cluster, ...(options.env ? { env: options.env } : {}), description: `Bosun cluster ${options.cluster}` });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}
