import { StateStore, type AwsClients } from "@bosun/aws";
import type { Clock, Logger, NodeRef, Settings, TrustStore } from "@bosun/core";
import type { BootReport, RoleFactory, RoleServices } from "./role.ts";

/**
 * Runs each role's boot step for a node that is not running its agent yet (`bosun agent
 * --sync-once`, before the node's own server starts). Nothing is published at boot.
 */
export async function bootRoles(
  deps: { clients: AwsClients; logger: Logger; clock: Clock; trust: TrustStore },
  options: { settings: Settings; node: NodeRef; roles: readonly RoleFactory[]; signal: AbortSignal },
): Promise<BootReport[]> {
  const services: RoleServices = {
    ...deps,
    node: options.node,
    settings: options.settings,
    store: new StateStore({ clients: deps.clients }, { bucket: options.settings.bucket }),
    events: { emit: async () => undefined },
  };
  const reports: BootReport[] = [];
  for (const factory of options.roles) {
    const role = factory(services);
    if (role.boot) reports.push(await role.boot(options.signal));
  }
  return reports;
}
