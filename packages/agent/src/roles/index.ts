import type { RoleFactory } from "../role.ts";

/**
 * The roles a node can take on, by name, each loaded only on a node that has it: a web node
 * never loads the db role's MariaDB client (about 1 MB of code with its character sets).
 * Adding a role is adding a folder and a row here.
 */
export const roleLoaders: Readonly<Record<string, () => Promise<RoleFactory>>> = {
  web: async () => (await import("./web/index.ts")).webRole,
  db: async () => (await import("./db/index.ts")).dbRole,
  balancer: async () => (await import("./balancer/index.ts")).balancerRole,
};

/** The factories for a node's roles; roles without a plug-in (yet) take only the spine's commands. */
export async function rolesFor(names: readonly string[]): Promise<RoleFactory[]> {
  return Promise.all(names.flatMap((name) => (roleLoaders[name] ? [roleLoaders[name]()] : [])));
}
