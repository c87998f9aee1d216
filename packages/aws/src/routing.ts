import type { Target, UnsignedEnvelope } from "@bosun/core";

/**
 * SNS routes a message to a node's queue on its message attributes, one per target
 * (to.all, to.role.<role>, to.node.<id>), beside kind, type and correlation. SNS filters
 * on at most ten attributes of a message, so a command names at most eight roles and nodes.
 */
export const MAX_TARGETS = 8;

/** Why a target cannot be routed through SNS, or undefined when it can. */
export function unroutable(target: Target | undefined): string | undefined {
  const count = (target?.roles?.length ?? 0) + (target?.nodes?.length ?? 0);
  return count > MAX_TARGETS ? `a command names at most ${MAX_TARGETS} roles and nodes together (SNS filters on ten message attributes); this one names ${count}` : undefined;
}

/**
 * Message attributes that SNS filter policies route on. Events also carry the node they are
 * about and the command type they answer, so an operator's subscription (e-mail, chat) can ask
 * for, say, every failed backup-now: `{"kind": ["event"], "type": ["failed"], "command": ["backup-now"]}`.
 */
export function routingAttributes(envelope: UnsignedEnvelope): Record<string, string> {
  const attributes: Record<string, string> = { kind: envelope.kind, type: envelope.type, correlation: envelope.correlationId };
  if (envelope.kind === "event" && typeof envelope.payload === "object" && envelope.payload !== null) {
    const payload = envelope.payload as { node?: { id?: unknown }; commandType?: unknown };
    if (typeof payload.node?.id === "string") attributes["node"] = payload.node.id;
    if (typeof payload.commandType === "string") attributes["command"] = payload.commandType;
  }
  const target = envelope.target;
  if (target?.all) attributes["to.all"] = "1";
  for (const role of target?.roles ?? []) attributes[`to.role.${role}`] = "1";
  for (const node of target?.nodes ?? []) attributes[`to.node.${node}`] = "1";
  return attributes;
}

/** The SNS filter policy for a node's queue: commands to all, to one of its roles, or to it. */
export function nodeFilterPolicy(nodeId: string, roles: readonly string[]): Record<string, unknown> {
  const exists = [{ exists: true }];
  return {
    $or: [{ "to.all": exists }, ...roles.map((role) => ({ [`to.role.${role}`]: exists })), { [`to.node.${nodeId}`]: exists }],
  };
}
