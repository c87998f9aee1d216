import { z } from "zod";

export const namePattern = /^[A-Za-z0-9_-]{1,64}$/;
const name = z.string().regex(namePattern, "expected 1-64 letters, digits, '_' or '-'");

/**
 * A node signs its events with its own key, and names itself as their issuer: `node.<node id>`.
 * The dot keeps node issuers apart from the trust file's key ids, which cannot contain one.
 */
export const nodeIssuerPrefix = "node.";
export const nodeIssuer = (nodeId: string) => `${nodeIssuerPrefix}${nodeId}`;
export function nodeOfIssuer(issuer: string): string | undefined {
  return issuer.startsWith(nodeIssuerPrefix) ? issuer.slice(nodeIssuerPrefix.length) : undefined;
}
const issuerName = z.string().regex(/^(node\.)?[A-Za-z0-9_-]{1,64}$/, "expected a key id (1-64 letters, digits, '_' or '-') or node.<node id>");

/** Who a command is for: every node, nodes with one of some roles, or named nodes. */
export const targetSchema = z
  .object({
    all: z.boolean().optional(),
    roles: z.array(name).optional(),
    nodes: z.array(name).optional(),
  })
  .strict()
  .refine((t) => t.all === true || (t.roles?.length ?? 0) + (t.nodes?.length ?? 0) > 0, "a command needs a target");

export type Target = z.infer<typeof targetSchema>;

/** Commands make nodes act now; events report; records are signed state kept in S3 that makes nodes act when read. */
export const kinds = ["command", "event", "record"] as const;
export type Kind = (typeof kinds)[number];

/** The one envelope every command and event travels in. `sig` covers every other field. */
export const envelopeSchema = z
  .object({
    v: z.literal(1),
    id: z.uuid(),
    kind: z.enum(kinds),
    type: z.string().regex(/^[a-z][a-z0-9.-]{0,63}$/, "expected a lower-case type name"),
    issuedAt: z.iso.datetime(),
    expiresAt: z.iso.datetime(),
    issuer: issuerName,
    target: targetSchema.optional(),
    correlationId: z.string().min(1).max(128),
    payload: z.unknown(),
    sig: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, "expected a base64 Ed25519 signature"),
  })
  .strict();

export type Envelope = z.infer<typeof envelopeSchema>;
export type UnsignedEnvelope = Omit<Envelope, "sig">;

export function describeTarget(target: Target | undefined): string {
  if (!target) return "nobody";
  const parts: string[] = [];
  if (target.all) parts.push("all");
  for (const role of target.roles ?? []) parts.push(`role:${role}`);
  for (const node of target.nodes ?? []) parts.push(`node:${node}`);
  return parts.join(",");
}

/** Parses `all`, `role:web`, `node:web-1` (comma separated) into a target. */
export function parseTarget(text: string): Target {
  const target: { all?: boolean; roles?: string[]; nodes?: string[] } = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    if (part === "all") target.all = true;
    else if (part.startsWith("role:")) (target.roles ??= []).push(part.slice(5));
    else if (part.startsWith("node:")) (target.nodes ??= []).push(part.slice(5));
    else (target.roles ??= []).push(part);
  }
  return targetSchema.parse(target);
}

export function targetsNode(target: Target | undefined, nodeId: string, roles: readonly string[]): boolean {
  if (!target) return false;
  return target.all === true || (target.nodes ?? []).includes(nodeId) || (target.roles ?? []).some((r) => roles.includes(r));
}
