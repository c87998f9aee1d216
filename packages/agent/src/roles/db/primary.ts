import { PreconditionFailed, dbPrimaryKey, readPrimary } from "@bosun/aws";
import { BosunError, type DbPrimary } from "@bosun/core";
import type { RoleServices } from "../../role.ts";

/** A promotion could not be recorded (another promotion kept winning the conditional write). */
export class PromotionError extends BosunError {}

/**
 * Makes this node the cluster's primary: a new generation of the signed db-primary record,
 * written only over the generation it read (If-Match), or where none was (If-None-Match), then
 * a db-primary event naming it. A record that cannot be verified is replaced: promotion is how
 * an operator puts it right.
 */
export async function promote(services: RoleServices, server: string): Promise<DbPrimary> {
  const deps = { store: services.store, keys: services.nodeKeyDirectory() };
  for (let attempt = 1; attempt <= 5; attempt++) {
    const current = await readPrimary(deps);
    const previous = current.ok ? current.primary : undefined;
    const record: DbPrimary = {
      node: services.node.id,
      server,
      generation: (previous?.generation ?? 0) + 1,
      ...(previous && previous.node !== services.node.id ? { previous: previous.node } : {}),
      promotedAt: services.clock.now().toISOString(),
    };
    try {
      await services.store.put(dbPrimaryKey, services.signRecord("db-primary", record), current.etag ? { ifMatch: current.etag } : { ifNoneMatch: "*" });
    } catch (error) {
      if (error instanceof PreconditionFailed) continue;
      throw error;
    }
    services.logger.warn({ primary: record }, "this node is the cluster's primary now");
    await services.events.emit("db-primary", `db-primary-${record.generation}-${services.node.id}`, { node: services.node, primary: record });
    return record;
  }
  throw new PromotionError("PROMOTION_CONFLICT", `${dbPrimaryKey} kept changing while this node tried to record its promotion: another promotion is under way`);
}

/** Why this node must not ship its binary log (another node is the primary), or undefined when it may. */
export async function notPrimary(services: RoleServices): Promise<string | undefined> {
  const current = await readPrimary({ store: services.store, keys: services.nodeKeyDirectory() });
  // An unreadable record does not stop shipping: losing the archive is worse than a second history.
  if (!current.ok || !current.primary || current.primary.node === services.node.id) return undefined;
  return `${current.primary.node} is the cluster's primary since ${current.primary.promotedAt} (generation ${current.primary.generation})`;
}
