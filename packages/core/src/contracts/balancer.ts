import { z } from "zod";
import { namePattern } from "../envelope.ts";
import { defineContract } from "./command.ts";

const nodeId = z.string().regex(namePattern, "expected a node id of 1-64 letters, digits, '_' or '-'");

/** Where a web node's site is reached: reported by web nodes, used by balancers. */
export const addressSchema = z.object({ host: z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/), port: z.number().int().min(1).max(65535) }).strict();
export type Address = z.infer<typeof addressSchema>;

/**
 * Drains a web node on every balancer: no new sessions go to it, its current ones finish (or
 * the drain timeout passes), then it is held in maintenance until `lb-enable` or its node-down.
 */
export const lbDrainContract = defineContract({
  type: "lb-drain",
  role: "balancer",
  summary: "Stop sending new requests to a web node, wait for its sessions to finish (or the timeout), then hold it out of rotation",
  payload: z.object({ node: nodeId, timeoutSeconds: z.number().int().min(0).max(86400).optional() }).strict(),
});

/** Puts a drained web node back into rotation on every balancer. */
export const lbEnableContract = defineContract({
  type: "lb-enable",
  role: "balancer",
  summary: "Put a drained web node back into rotation",
  payload: z.object({ node: nodeId }).strict(),
});

export const backendStates = ["ready", "drain", "maint"] as const;
export type BackendState = (typeof backendStates)[number];
export const backendHealths = ["up", "down", "unchecked"] as const;
export type BackendHealth = (typeof backendHealths)[number];

/** One web node as a balancer's HAProxy sees it. */
export const backendSchema = z
  .object({
    node: nodeId,
    address: z.string(),
    /** What the operator asked for (ready, drain, maint). */
    state: z.enum(backendStates),
    /** What HAProxy's active checks say. */
    health: z.enum(backendHealths),
    /** HAProxy's own status text (UP, DOWN 1/3, DRAIN, MAINT...). */
    status: z.string(),
    sessions: z.number().int().nonnegative(),
  })
  .strict();
export type Backend = z.infer<typeof backendSchema>;

export const pairRoles = ["active", "standby", "starting"] as const;
export type PairRole = (typeof pairRoles)[number];

/** One balancer of a pair: its role, the entry point, and its view of the other balancer. */
export const pairReportSchema = z
  .object({
    role: z.enum(pairRoles),
    /** The entry point, for example "eip eipalloc-0abc (203.0.113.10)". */
    entry: z.string(),
    /** The instance the entry point is associated with, as this balancer last read it. */
    holder: z.string().optional(),
    peer: z.string(),
    /** Consecutive failed checks of the other balancer, and how many make a takeover. */
    failedChecks: z.number().int().nonnegative(),
    threshold: z.number().int().positive(),
    intervalMs: z.number().int().positive(),
  })
  .strict();
export type PairReport = z.infer<typeof pairReportSchema>;

/** What a balancer node adds to its heartbeats: where it listens and its backends. */
export const balancerReportSchema = z
  .object({
    listen: z.string(),
    /** The HAProxy worker's pid, when it answers. */
    pid: z.number().int().optional(),
    backends: z.array(backendSchema),
    /** In a pair of balancers: whether this one holds the entry point, and how its checks of the other one go. */
    pair: pairReportSchema.optional(),
    problem: z.string().optional(),
  })
  .strict();
export type BalancerReport = z.infer<typeof balancerReportSchema>;

/** Events a balancer publishes about its backends. */
export const balancerEventSchemas = {
  /** One update of the backend list (a burst of node-ups and node-downs is one). */
  "lb-update": z.object({
    node: z.object({ id: nodeId, roles: z.array(nodeId) }),
    added: z.array(nodeId),
    removed: z.array(nodeId),
    /** Web nodes not added, and why (an address outside the allowed networks, no address). */
    refused: z.array(z.object({ node: nodeId, reason: z.string() }).strict()),
    servers: z.number().int().nonnegative(),
    /** How the change reached HAProxy: its runtime API, or a validated reload when the socket was gone. */
    via: z.enum(["runtime", "reload"]),
  }),
  /** A balancer of a pair took the entry point: the other one failed its checks, nobody held it, or it came back with failback on. */
  "lb-takeover": z.object({
    node: z.object({ id: nodeId, roles: z.array(nodeId) }),
    entry: z.string(),
    /** Who held it before (an instance id), if anyone. */
    previous: z.string().optional(),
    reason: z.enum(["peer-failed", "unheld", "failback"]),
    failedChecks: z.number().int().nonnegative(),
    threshold: z.number().int().positive(),
    intervalMs: z.number().int().positive(),
    /** From the first failed check of the peer to holding the entry point. */
    tookMs: z.number().int().nonnegative().optional(),
  }),
  /** HAProxy's checks changed their verdict on a web node. */
  "lb-health": z.object({
    node: z.object({ id: nodeId, roles: z.array(nodeId) }),
    backend: nodeId,
    address: z.string(),
    from: z.enum(backendHealths),
    to: z.enum(backendHealths),
    status: z.string(),
    check: z.string().optional(),
  }),
} as const;
