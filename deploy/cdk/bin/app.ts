// The CDK app: `npx cdk synth -c cluster=prod` (deploy/cdk/cdk.json runs this file).
import { App } from "aws-cdk-lib";
import { buildApp, optionsFromContext, type AppOptions } from "../src/app.ts";

const app = new App();
// The account and region of the credentials cdk runs with; none when synthesising without any.
const region = process.env["CDK_DEFAULT_REGION"];
let options: AppOptions;
try {
  options = optionsFromContext((key) => app.node.tryGetContext(key), region ? { account: process.env["CDK_DEFAULT_ACCOUNT"], region } : undefined);
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exit(2);
}
buildApp(options, app);
app.synth();
