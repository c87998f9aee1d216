import type { RoleFactory } from "../role.ts";
import { balancerRole } from "./balancer/index.ts";
import { dbRole } from "./db/index.ts";
import { webRole } from "./web/index.ts";

/** The roles a node can take on, by name. Adding a role is adding a folder and a row here. */
export const roleFactories: Readonly<Record<string, RoleFactory>> = {
  web: webRole,
  db: dbRole,
  balancer: balancerRole,
};

/** The factories for a node's roles; roles without a plug-in (yet) take only the spine's commands. */
export function rolesFor(names: readonly string[]): RoleFactory[] {
  return names.flatMap((name) => (roleFactories[name] ? [roleFactories[name]] : []));
}
