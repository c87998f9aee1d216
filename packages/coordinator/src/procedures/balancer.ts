import { StateStore, TargetGroup, elbv2Provider, type TargetDrain, type TargetStatus } from "@bosun/aws";
import { BosunError, createLogger, type BalancerReport } from "@bosun/core";
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

/** The AWS target group in front of the web nodes, as ELBv2 reports it now. */
export interface TargetGroupStatus {
  arn: string;
  runBy: "coordinator" | "balancer";
  deregistrationDelaySeconds: number;
  /** Each target with its state and health; `node` names the web node it is, where the fleet knows. */
  targets: (TargetStatus & { node?: string })[];
}

export interface LbStatus {
  balancers: BalancerStatus[];
  targetGroup?: TargetGroupStatus;
}

/**
 * The fleet's balancers with their backends (state and health), from the node records the
 * coordinator keeps, and the target group's targets read from ELBv2 itself when one is configured.
 */
export async function balancerStatus(issuer: Issuer): Promise<LbStatus> {
  const records = await loadNodeRecords(new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket }));
  const balancers = records
    .filter((n) => n.roles.includes("balancer") && n.status !== "down")
    .map((n) => ({ node: n.id, status: n.status, lastSeen: n.lastSeen, ...(n.report?.balancer ? { report: n.report.balancer } : {}) }));
  const settings = issuer.settings.targetGroup;
  if (!settings) return { balancers };
  const group = targetGroup(issuer);
  const [targets, deregistrationDelaySeconds] = await Promise.all([group.targets(), group.deregistrationDelaySeconds()]);
  const nodeOf = (t: TargetStatus) =>
    records.find((n) => n.roles.includes("web") && (settings.targetType === "instance" ? n.id === t.id : n.report?.web?.address?.host === t.id && n.report.web.address.port === t.port))?.id;
  return {
    balancers,
    targetGroup: { arn: settings.arn, runBy: settings.runBy, deregistrationDelaySeconds, targets: targets.map((t) => ({ ...t, ...(nodeOf(t) ? { node: nodeOf(t)! } : {}) })) },
  };
}

function targetGroup(issuer: Issuer): TargetGroup {
  // The CLI reports what happened in its result; the group's own log lines would only repeat it.
  return new TargetGroup({ elbv2: elbv2Provider(), logger: createLogger({ level: "silent", name: "target-group" }) }, { settings: issuer.settings.targetGroup! });
}

/** A web node as the target group reads it, from the fleet's record of it. */
async function targetFact(issuer: Issuer, node: string) {
  const record = (await loadNodeRecords(new StateStore({ clients: issuer.clients }, { bucket: issuer.settings.bucket }))).find((n) => n.id === node);
  if (!record) throw new BosunError("BACKEND_UNKNOWN", `node ${node} is not in the fleet record`);
  return { node, roles: record.roles, up: record.status === "up", address: record.report?.web?.address };
}

const followed = (options: FollowOptions) => ({ wait: options.wait, timeoutSeconds: options.timeoutSeconds, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });

/** Drains a web node on every balancer: new requests go elsewhere; each balancer answers once its sessions have finished (or its drain timeout passed). */
/**
 * With a target group the coordinator keeps, the drain's target-group half runs here: the
 * coordinator takes no commands, and deregistering is one idempotent call (ELBv2 drains it).
 */
export async function drainBackend(issuer: Issuer, options: FollowOptions & { node: string; drainTimeoutSeconds?: number | undefined }): Promise<SendResult & { targetGroup?: TargetDrain }> {
  const payload = { node: options.node, ...(options.drainTimeoutSeconds === undefined ? {} : { timeoutSeconds: options.drainTimeoutSeconds }) };
  const drainHere = issuer.settings.targetGroup?.runBy === "coordinator";
  const [sent, drained] = await Promise.all([
    sendCommand(issuer, { type: "lb-drain", target: "role:balancer", payload, ...followed(options) }),
    drainHere ? targetGroup(issuer).drain(await targetFact(issuer, options.node), options.wait ? (options.drainTimeoutSeconds === undefined ? {} : { timeoutMs: options.drainTimeoutSeconds * 1000 }) : { timeoutMs: 0 }) : undefined,
  ]);
  return drained ? { ...sent, targetGroup: drained } : sent;
}

/** Puts a drained web node back into rotation on every balancer (and in the target group the coordinator keeps). */
export async function enableBackend(issuer: Issuer, options: FollowOptions & { node: string }): Promise<SendResult> {
  if (issuer.settings.targetGroup?.runBy === "coordinator") await targetGroup(issuer).follow({ ...(await targetFact(issuer, options.node)), up: true });
  return sendCommand(issuer, { type: "lb-enable", target: "role:balancer", payload: { node: options.node }, ...followed(options) });
}
