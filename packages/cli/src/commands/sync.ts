import { StateStore, stateKeys } from "@bosun/aws";
import { ReleaseRoot, syncToDesired, type SyncAction } from "@bosun/agent";
import { CommandFailedError, type DesiredRelease } from "@bosun/core";
import type { Context } from "../context.ts";

export interface SyncResult {
  apps: { app: string; commit?: string; action: SyncAction | "no-release"; durationMs: number }[];
}

/**
 * Brings this node's apps to their desired releases and returns: systemd runs it before the
 * HTTP server starts. Fast when already current (no fetch, no swap), so safe at every boot.
 */
export async function syncOnce(ctx: Context, signal: AbortSignal): Promise<SyncResult> {
  const store = new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket });
  const apps: SyncResult["apps"] = [];
  const failures: string[] = [];
  for (const [app, settings] of Object.entries(ctx.settings.apps)) {
    const started = performance.now();
    const log = ctx.logger.child({ app });
    const took = () => Math.round(performance.now() - started);
    const desired = await store.get<DesiredRelease>(stateKeys.release(app));
    if (!desired) {
      apps.push({ app, action: "no-release", durationMs: took() });
      continue;
    }
    const root = new ReleaseRoot({ logger: ctx.logger }, { app, settings });
    try {
      const action = await syncToDesired(root, desired, signal, log);
      apps.push({ app, commit: desired.commit, action, durationMs: took() });
    } catch (error) {
      log.error({ err: error, commit: desired.commit }, "boot-time sync failed");
      failures.push(`${app}: ${(error as Error).message}`);
    }
  }
  if (failures.length) throw new CommandFailedError(`Sync failed for ${failures.join("; ")}`);
  return { apps };
}

export function renderSync(result: SyncResult): string {
  if (result.apps.length === 0) return "No apps are configured on this node.";
  return result.apps.map((a) => `${a.app}: ${a.action}${a.commit ? ` ${a.commit.slice(0, 12)}` : ""} (${a.durationMs}ms)`).join("\n");
}
