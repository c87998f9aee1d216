// The CDK app: `npx cdk synth -c cluster=prod` (deploy/cdk/cdk.json runs this file).
import { App } from "aws-cdk-lib";
import { buildApp, parseCombinedRoles } from "../src/app.ts";

const app = new App();
const text = (key: string): string | undefined => {
  const value: unknown = app.node.tryGetContext(key);
  return value === undefined ? undefined : String(value);
};
const cluster = text("cluster");
if (!cluster) {
  process.stderr.write("Set the cluster's name: cdk synth -c cluster=prod\n");
  process.exit(2);
}
const lockDays = text("objectLockDays");
buildApp({
  cluster,
  ...(text("githubRepository") ? { githubRepository: text("githubRepository")! } : {}),
  ...(text("githubOidcProviderArn") ? { githubOidcProviderArn: text("githubOidcProviderArn")! } : {}),
  ...(lockDays ? { objectLockDays: Number(lockDays) } : {}),
  ...(text("combinedRoles") ? { combinedRoles: parseCombinedRoles(text("combinedRoles")!) } : {}),
  // The account and region of the credentials cdk runs with; none when synthesising without any.
  ...(process.env["CDK_DEFAULT_REGION"] ? { env: { account: process.env["CDK_DEFAULT_ACCOUNT"], region: process.env["CDK_DEFAULT_REGION"] } } : {}),
}, app);
app.synth();
