import { bootRoles, rolesFor, type BootReport } from "@bosun/agent";
import { abortableDelay } from "@bosun/aws";
import { CommandFailedError, ConfigError, errorMessage, systemClock } from "@bosun/core";
import type { Context } from "../context.ts";

export interface SyncResult {
  roles: BootReport[];
}

/**
 * Runs the boot step of each of this node's roles and returns: systemd runs it before the
 * node's own server starts (for web: brings each app to its desired release). Fast when the
 * node is already in line, so safe at every boot.
 */
export async function syncOnce(
  ctx: Context,
  options: { identify: () => Promise<{ nodeId: string; roles: string[] }>; retryForSeconds: number },
  signal: AbortSignal,
): Promise<SyncResult> {
  const deadline = Date.now() + options.retryForSeconds * 1000;
  for (let attempt = 1, pause = 2000; ; attempt++, pause = Math.min(pause * 2, 30_000)) {
    let why: string;
    try {
      // Who this node is comes from EC2 as well, which may not answer yet at boot.
      const { nodeId, roles: names } = await options.identify();
      const roles = await bootRoles(
        { clients: ctx.clients, logger: ctx.logger, clock: systemClock, trust: ctx.trust() },
        { settings: ctx.settings, node: { id: nodeId, roles: names }, roles: await rolesFor(names), signal },
      );
      const failures = roles.flatMap((r) => r.failures);
      if (failures.length === 0) return { roles };
      why = failures.join("; ");
    } catch (error) {
      // A bad flag or setting is not going to get better by waiting.
      if (error instanceof ConfigError) throw error;
      why = errorMessage(error);
    }
    // At boot the network or S3 may not be there yet: try again until the deadline, then fail.
    if (signal.aborted || Date.now() + pause > deadline) throw new CommandFailedError(`Sync failed after ${attempt} attempt(s): ${why}`);
    ctx.logger.warn({ attempt, retryInMs: pause, error: why }, "boot-time sync failed; trying again");
    await abortableDelay(pause, signal);
  }
}

export function renderSync(result: SyncResult): string {
  const items = result.roles.flatMap((r) => r.items.map((i) => `${r.role} ${i.name}: ${i.action}${i.detail ? ` ${i.detail.slice(0, 12)}` : ""} (${i.durationMs}ms)`));
  return items.length ? items.join("\n") : "Nothing to bring in line on this node.";
}
