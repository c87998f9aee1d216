import { z } from "zod";
import { namePattern } from "../envelope.ts";
import { refusalReasons } from "../parse.ts";
import { webReportSchema } from "./web.ts";
import { dbEventSchemas, dbReportSchema } from "./db.ts";
import { balancerEventSchemas, balancerReportSchema } from "./balancer.ts";

const nodeRef = z.object({ id: z.string().regex(namePattern), roles: z.array(z.string().regex(namePattern)) });
export type NodeRef = z.infer<typeof nodeRef>;

/** What each of a node's roles adds to its node-up and heartbeats (web: the releases it serves). */
export const roleReportsSchema = z.object({ web: webReportSchema.optional(), db: dbReportSchema.optional(), balancer: balancerReportSchema.optional() }).strict();
export type RoleReports = z.infer<typeof roleReportsSchema>;

/**
 * Events agents and the coordinator publish on the bus. A command's events carry the
 * command's id as their correlation id, so its issuer can follow them.
 */
export const eventSchemas = {
  ack: z.object({ node: nodeRef, commandType: z.string(), receiveCount: z.number().int(), resumed: z.boolean() }),
  progress: z.object({ node: nodeRef, commandType: z.string(), message: z.string(), fraction: z.number().min(0).max(1).optional() }),
  done: z.object({ node: nodeRef, commandType: z.string(), durationMs: z.number(), result: z.unknown() }),
  failed: z.object({
    node: nodeRef,
    commandType: z.string(),
    error: z.string(),
    code: z.string().optional(),
    interrupted: z.boolean().optional(),
  }),
  refused: z.object({
    node: nodeRef,
    reason: z.enum(refusalReasons),
    detail: z.string(),
    /** Whether messageId, type and issuer passed the signature check, or are only what the message claimed. */
    verified: z.boolean(),
    messageId: z.string().optional(),
    type: z.string().optional(),
    issuer: z.string().optional(),
    /** The S3 key of a signed state record that was refused (a desired release, a plan), when it was one. */
    record: z.string().optional(),
  }),
  "node-up": z.object({ node: nodeRef, version: z.string(), startedAt: z.iso.datetime(), pid: z.number().int(), report: roleReportsSchema }),
  "node-down": z.object({ node: nodeRef, reason: z.enum(["decommissioned", "lost"]), lastSeen: z.iso.datetime().optional() }),
  /**
   * Something an operator must hear about that is no command's answer: a scheduled backup that
   * did not run, a drill that failed, a restore undone at start. Subscribe e-mail or chat to these.
   */
  alert: z.object({
    node: nodeRef.optional(),
    severity: z.enum(["warning", "critical"]),
    code: z.string().regex(/^[A-Z][A-Z0-9_]{1,63}$/),
    message: z.string().max(2000),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
  /**
   * The coordinator removed what a gone node left in SQS and SNS: its queues, their
   * dead-letter queues (with any message still in them) and their subscriptions.
   */
  "queues-removed": z.object({
    node: nodeRef,
    status: z.enum(["lost", "down"]),
    lastSeen: z.iso.datetime(),
    queues: z.array(z.string()),
    subscriptions: z.array(z.string()),
  }),
  heartbeat: z.object({ node: nodeRef, inFlight: z.number().int(), uptimeSeconds: z.number(), report: roleReportsSchema }),
  ...balancerEventSchemas,
  ...dbEventSchemas,
} as const;

export type EventType = keyof typeof eventSchemas;
export type EventPayload<T extends EventType> = z.infer<(typeof eventSchemas)[T]>;
export const eventTypes = Object.keys(eventSchemas) as EventType[];

export function isEventType(type: string): type is EventType {
  return Object.hasOwn(eventSchemas, type);
}

/** Events that end a command's story on one node. */
export const terminalEvents: readonly EventType[] = ["done", "failed", "refused"];
