import { Agent, rolesFor } from "@bosun/agent";
import { identityFromEc2, type NodeIdentity } from "@bosun/aws";
import { ConfigError, namePattern, systemClock } from "@bosun/core";
import type { Context } from "../context.ts";

export interface AgentRunOptions {
  nodeId?: string | undefined;
  roles?: string[] | undefined;
}

/** Works out who this node is (flags locally, EC2 metadata and tags on AWS) and starts its agent. */
export async function startAgent(ctx: Context, options: AgentRunOptions): Promise<{ agent: Agent; identity: NodeIdentity }> {
  const identity = await resolveIdentity(ctx, options);
  if (identity.cluster && identity.cluster !== ctx.settings.cluster) {
    // A node tagged for one cluster must not take commands from another's topic.
    throw new ConfigError(
      `Instance ${identity.nodeId} is tagged bosun:cluster=${identity.cluster} but the cluster setting (BOSUN_CLUSTER) is ${JSON.stringify(ctx.settings.cluster)}`,
    );
  }
  const agent = new Agent(
    { clients: ctx.clients, logger: ctx.logger, clock: systemClock, trust: ctx.trust() },
    { settings: ctx.settings, node: { id: identity.nodeId, roles: identity.roles }, roles: await rolesFor(identity.roles) },
  );
  ctx.logger.info({ node: identity.nodeId, roles: identity.roles, identityFrom: identity.source, configFile: ctx.settings.configFile }, "starting agent");
  await agent.start();
  return { agent, identity };
}

export async function resolveIdentity(ctx: Context, options: AgentRunOptions): Promise<NodeIdentity> {
  const roles = options.roles ?? [];
  if (options.nodeId !== undefined) {
    if (!namePattern.test(options.nodeId)) throw new ConfigError(`Invalid --node-id: expected 1-64 letters, digits, '_' or '-', received ${JSON.stringify(options.nodeId)}`);
    if (roles.length === 0) throw new ConfigError(`--node-id needs at least one --role (web, db, balancer), received none`);
    for (const role of roles) {
      if (!namePattern.test(role)) throw new ConfigError(`Invalid --role: expected letters, digits, '_' or '-', received ${JSON.stringify(role)}`);
    }
    return { nodeId: options.nodeId, roles, source: "flags" };
  }
  if (roles.length > 0) throw new ConfigError(`--role needs --node-id; on EC2 roles come from the instance's bosun:role tag`);
  return identityFromEc2(ctx.clients);
}
