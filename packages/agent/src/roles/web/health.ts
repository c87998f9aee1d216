import type { AppSettings } from "@bosun/core";
import { abortableDelay } from "@bosun/aws";

export type HealthResult = { ok: true; status: number; attempts: number } | { ok: false; error: string };

/** Probes the node's own site after a swap: the configured status and, optionally, the release's commit id in the body. */
export async function probeHealth(health: NonNullable<AppSettings["health"]>, commit: string, signal: AbortSignal): Promise<HealthResult> {
  let last = "no attempt made";
  for (let attempt = 1; attempt <= health.attempts; attempt++) {
    try {
      const response = await fetch(health.url, { signal: AbortSignal.any([signal, AbortSignal.timeout(health.timeoutSeconds * 1000)]), redirect: "manual" });
      const body = await response.text();
      if (response.status !== health.status) last = `${health.url} answered ${response.status}, expected ${health.status}`;
      else if (health.marker && !body.includes(commit)) last = `${health.url} does not show release ${commit.slice(0, 12)}`;
      else return { ok: true, status: response.status, attempts: attempt };
    } catch (error) {
      last = `${health.url} did not answer: ${(error as Error).message}`;
    }
    if (signal.aborted) break;
    if (attempt < health.attempts) await abortableDelay(250 * attempt, signal);
  }
  return { ok: false, error: last };
}
