import { Bus, NodeKeyDirectory, StateStore, ensureTopic, signRecord, type AwsClients } from "@bosun/aws";
import type { Clock, Logger, NodeRef, Settings, TrustStore } from "@bosun/core";
import { NodeKeyring } from "./node-key.ts";
import { NodeEventPublisher } from "./node-events.ts";
import type { BootReport, RoleFactory, RoleServices } from "./role.ts";

/**
 * Runs each role's boot step for a node whose agent is not running yet (`bosun agent
 * --sync-once`, before the node's own server starts). What a step refuses (a desired release
 * record that fails its checks) is reported as an event signed with the node's own key.
 */
export async function bootRoles(
  deps: { clients: AwsClients; logger: Logger; clock: Clock; trust: TrustStore },
  options: { settings: Settings; node: NodeRef; roles: readonly RoleFactory[]; signal: AbortSignal },
): Promise<BootReport[]> {
  const store = new StateStore({ clients: deps.clients }, { bucket: options.settings.bucket });
  const topicArn = await ensureTopic(deps.clients, options.settings.cluster);
  const keyring = await NodeKeyring.open(options.settings.stateDir);
  await keyring.register(store, topicArn, options.node.id);
  const events = new NodeEventPublisher(
    { bus: new Bus({ clients: deps.clients }, { topicArn }), store, clock: deps.clock, logger: deps.logger },
    { node: options.node, keyring, ttlSeconds: options.settings.commandTtlSeconds },
  );
  const directory = new NodeKeyDirectory({ store }, { topicArn });
  const services: RoleServices = {
    ...deps,
    node: options.node,
    settings: options.settings,
    store,
    events,
    signRecord: (type, payload) => signRecord(keyring.signer(options.node.id), type, payload, deps.clock.now()),
    nodeKeyDirectory: () => directory,
  };
  const reports: BootReport[] = [];
  for (const factory of options.roles) {
    const role = factory(services);
    if (role.boot) reports.push(await role.boot(options.signal));
  }
  return reports;
}
