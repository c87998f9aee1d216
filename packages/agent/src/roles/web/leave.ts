import { abortableDelay, stateKeys } from "@bosun/aws";
import type { Logger } from "@bosun/core";
import type { RoleServices } from "../../role.ts";

const POLL_MS = 500;

/** The balancers the fleet record lists as up: the ones that must let go of this node. */
async function balancersUp(services: RoleServices): Promise<string[]> {
  const fleet = await services.store.get<{ nodes?: { id: string; roles: string[]; status: string }[] }>(stateKeys.fleet);
  return (fleet?.nodes ?? []).filter((n) => n.status === "up" && n.roles.includes("balancer")).map((n) => n.id);
}

/**
 * A decommissioned web node's last step before its agent exits (and the node, and its HTTP
 * server, go away): wait until every balancer the fleet lists as up has said, in S3, that it
 * has drained and removed this node, or until web.leaveTimeoutSeconds. Balancers drain a node
 * that announces it is leaving (node-down, decommissioned): it takes no new requests, and goes
 * once its requests have finished. A word older than this leave does not count.
 */
export async function waitForDrains(services: RoleServices, log: Logger, signal: AbortSignal): Promise<{ drained: string[]; missing: string[] }> {
  const started = services.clock.now().getTime();
  const deadline = started + services.settings.web.leaveTimeoutSeconds * 1000;
  const balancers = await balancersUp(services).catch((error: unknown) => (log.warn({ err: error }, "could not read the fleet record to find the balancers"), []));
  if (balancers.length === 0) return { drained: [], missing: [] };
  log.info({ balancers, timeoutSeconds: services.settings.web.leaveTimeoutSeconds }, "waiting for the balancers to drain this node before it stops");
  const drained = new Set<string>();
  for (;;) {
    for (const balancer of balancers.filter((b) => !drained.has(b))) {
      const word = await services.store.get<{ at?: string }>(stateKeys.drain(services.node.id, balancer)).catch(() => undefined);
      // Clocks of two machines: a minute of slack is enough to tell this leave from an earlier one.
      if (word?.at && Date.parse(word.at) >= started - 60_000) drained.add(balancer);
    }
    const missing = balancers.filter((b) => !drained.has(b));
    if (missing.length === 0) {
      log.info({ balancers }, "the balancers drained this node");
      return { drained: [...drained], missing };
    }
    if (services.clock.now().getTime() >= deadline || signal.aborted) {
      log.warn({ missing, timeoutSeconds: services.settings.web.leaveTimeoutSeconds }, "gave up waiting for balancers to drain this node (web.leaveTimeoutSeconds)");
      return { drained: [...drained], missing };
    }
    await abortableDelay(POLL_MS, signal);
  }
}
