import { bootRoles, rolesFor, type BootReport } from "@bosun/agent";
import { CommandFailedError, systemClock } from "@bosun/core";
import type { Context } from "../context.ts";

export interface SyncResult {
  roles: BootReport[];
}

/**
 * Runs the boot step of each of this node's roles and returns: systemd runs it before the
 * node's own server starts (for web: brings each app to its desired release). Fast when the
 * node is already in line, so safe at every boot.
 */
export async function syncOnce(ctx: Context, options: { nodeId: string; roles: string[] }, signal: AbortSignal): Promise<SyncResult> {
  const roles = await bootRoles(
    { clients: ctx.clients, logger: ctx.logger, clock: systemClock, trust: ctx.trust() },
    { settings: ctx.settings, node: { id: options.nodeId, roles: options.roles }, roles: rolesFor(options.roles), signal },
  );
  const failures = roles.flatMap((r) => r.failures);
  if (failures.length) throw new CommandFailedError(`Sync failed for ${failures.join("; ")}`);
  return { roles };
}

export function renderSync(result: SyncResult): string {
  const items = result.roles.flatMap((r) => r.items.map((i) => `${r.role} ${i.name}: ${i.action}${i.detail ? ` ${i.detail.slice(0, 12)}` : ""} (${i.durationMs}ms)`));
  return items.length ? items.join("\n") : "Nothing to bring in line on this node.";
}
