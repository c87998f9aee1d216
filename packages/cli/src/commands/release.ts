import { releaseApp, type ReleaseOptions, type ReleaseResult } from "@bosun/coordinator";
import type { Context } from "../context.ts";

export type { ReleaseOptions, ReleaseResult };

/** `bosun release`: the rollout is a library (coordinator/procedures/rollout.ts); this runs it for the CLI. */
export function release(ctx: Context, options: ReleaseOptions): Promise<ReleaseResult> {
  return releaseApp(ctx, options);
}

export function renderRelease(result: ReleaseResult): string {
  const head = `${result.app} ${result.ref} → ${result.commit.slice(0, 12)} (${result.repo})`;
  if (result.commandId) return `${head}\nPublished release ${result.commandId}; web nodes prepare and switch as each is ready. Follow with: bosun releases --app ${result.app}`;
  const lines = [head];
  if (result.active?.length) lines.push(`Active on ${result.active.length} node(s): ${result.active.join(", ")}`);
  if (result.skipped?.length) lines.push(`Skipped (a newer release is active): ${result.skipped.join(", ")}`);
  for (const f of result.failed ?? []) lines.push(`Failed ${f.phase} on ${f.node}: ${f.detail}`);
  if (result.stopped) lines.push(`Stopped: ${result.stopped}`);
  if (result.rolledBack?.length) lines.push(`Returned to their previous release: ${result.rolledBack.join(", ")}`);
  return lines.join("\n");
}
