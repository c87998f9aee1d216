import { StateStore } from "@bosun/aws";
import type { BalancerReport } from "@bosun/core";
import { loadNodeRecords } from "../fleet.ts";
import type { Issuer } from "./issuer.ts";
import { sendCommand, type SendResult } from "./send.ts";
import type { FollowOptions } from "./backups.ts";

/** One balancer node and its backends, as its last heartbeat reported them. */
export interface BalancerStatus {
  node: string;
  status: string;
  lastSeen: string;
  report?: BalancerReport;
}

/** The fleet's balancers with their backends (state and health), from the node records the coordinator keeps. */
export async function balancerStatus(issuer: Issuer): Promise<BalancerStatus[]> {
  const records = await loadNodeRecords(new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket }));
  return records
    .filter((n) => n.roles.includes("balancer") && n.status !== "down")
    .map((n) => ({ node: n.id, status: n.status, lastSeen: n.lastSeen, ...(n.report?.balancer ? { report: n.report.balancer } : {}) }));
}

const followed = (options: FollowOptions) => ({ wait: options.wait, timeoutSeconds: options.timeoutSeconds, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });

/** Drains a web node on every balancer: new requests go elsewhere; each balancer answers once its sessions have finished (or its drain timeout passed). */
export function drainBackend(issuer: Issuer, options: FollowOptions & { node: string; drainTimeoutSeconds?: number | undefined }): Promise<SendResult> {
  const payload = { node: options.node, ...(options.drainTimeoutSeconds === undefined ? {} : { timeoutSeconds: options.drainTimeoutSeconds }) };
  return sendCommand(issuer, { type: "lb-drain", target: "role:balancer", payload, ...followed(options) });
}

/** Puts a drained web node back into rotation on every balancer. */
export function enableBackend(issuer: Issuer, options: FollowOptions & { node: string }): Promise<SendResult> {
  return sendCommand(issuer, { type: "lb-enable", target: "role:balancer", payload: { node: options.node }, ...followed(options) });
}
