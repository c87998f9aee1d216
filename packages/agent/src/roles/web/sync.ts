import type { DesiredRelease, Logger } from "@bosun/core";
import { ReleaseRoot } from "./release-root.ts";

export type SyncAction = "already-current" | "activated" | "newer-active";

/**
 * Brings one app to its desired release, outside any command: at boot (`--sync-once`) and when
 * the agent has subscribed, so a release published in between is not missed. Quick when current.
 */
export async function syncToDesired(root: ReleaseRoot, desired: DesiredRelease, signal: AbortSignal, log: Logger): Promise<SyncAction> {
  if ((await root.current()) === desired.commit) return "already-current";
  if ((await root.readState()).sequence > desired.sequence) return "newer-active";
  await root.prepare(desired.repo, desired.commit, signal, log);
  const outcome = await root.activate(desired.commit, desired.sequence, { signal, log });
  if (outcome.status === "failed") throw new Error(outcome.error);
  if (outcome.status === "interrupted") throw new Error("interrupted by a stop signal");
  return outcome.status === "skipped" ? "newer-active" : "activated";
}
