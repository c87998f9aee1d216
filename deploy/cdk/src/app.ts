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

/**
 * The app's options from CDK context (`-c key=value`), checked once: a bad value stops the
 * synthesis with a message naming the key and the value received.
 */
export function optionsFromContext(get: (key: string) => unknown, env?: Environment): AppOptions {
  const text = (key: string): string | undefined => {
    const value = get(key);
    return value === undefined || value === "" ? undefined : String(value);
  };
  const cluster = text("cluster");
  if (!cluster) throw new Error("Set the cluster's name with -c cluster=NAME (1-32 of a-z, 0-9 and '-')");
  if (!/^[a-z0-9-]{1,32}$/.test(cluster)) throw new Error(`cluster must be 1-32 of a-z, 0-9 and '-' (got "${cluster}")`);
  const repository = text("githubRepository");
  if (repository && !/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(repository)) throw new Error(`githubRepository must be OWNER/NAME (got "${repository}")`);
  const lock = text("objectLockDays");
  if (lock && !/^[1-9][0-9]{0,4}$/.test(lock)) throw new Error(`objectLockDays must be a whole number of days from 1 (got "${lock}")`);
  const provider = text("githubOidcProviderArn");
  const combined = text("combinedRoles");
  return {
    cluster,
    ...(repository ? { githubRepository: repository } : {}),
    ...(provider ? { githubOidcProviderArn: provider } : {}),
    ...(lock ? { objectLockDays: Number(lock) } : {}),
    ...(combined ? { combinedRoles: parseCombinedRoles(combined) } : {}),
    ...(env ? { env } : {}),
  };
}
