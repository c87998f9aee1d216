import type { z } from "zod";
import { envelopeSchema, type Envelope, type Kind } from "./envelope.ts";
import { err, ok, type Result } from "./result.ts";
import { verifyEnvelope } from "./signing.ts";
import type { TrustStore } from "./trust.ts";

export const refusalReasons = [
  "oversized",
  "malformed-json",
  "unsigned",
  "bad-envelope",
  "unknown-key",
  "bad-signature",
  "not-allowed",
  "expired",
  "not-yet-valid",
  "unknown-type",
  "bad-payload",
  "wrong-target",
  "wrong-sender",
] as const;
export type RefusalReason = (typeof refusalReasons)[number];

/** Why a message was refused, and what is known of it, for the log and the `refused` event. */
export interface Refusal {
  reason: RefusalReason;
  detail: string;
  /**
   * Whether the fields below passed the signature check. Unverified ones are only what the
   * message claims, and must not be trusted to name a command (in the ledger or an event).
   */
  verified: boolean;
  /** The envelope, once its signature checked out (refusals after that step). */
  envelope?: Envelope;
  messageId?: string;
  type?: string;
  issuer?: string;
  correlationId?: string;
}

export interface ParsedMessage<P = unknown> {
  envelope: Envelope;
  payload: P;
}

export interface ParseContext {
  trust: TrustStore;
  now: Date;
  maxBytes: number;
  /** The payload schema for a message type, or undefined when the type is unknown here. */
  schemaFor: (kind: Kind, type: string) => z.ZodType | undefined;
  /** Clock difference tolerated between issuer and receiver. */
  skewMs?: number;
  /** Longest lifetime a message may claim; bounds how long the ledger must remember ids. */
  maxLifetimeMs?: number;
}

export const DEFAULT_SKEW_MS = 60_000;
export const MAX_LIFETIME_MS = 24 * 3600_000;

/**
 * Parses the envelope, checks its signature, the issuer's permission and its lifetime,
 * then parses the payload. Returns a refusal rather than throwing: bad input is data, not a bug.
 */
export function parseMessage(raw: string, ctx: ParseContext): Result<ParsedMessage, Refusal> {
  const size = Buffer.byteLength(raw, "utf8");
  if (size > ctx.maxBytes) return err({ reason: "oversized", verified: false, detail: `body is ${size} bytes, limit is ${ctx.maxBytes}` });

  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (cause) {
    return err({ reason: "malformed-json", verified: false, detail: (cause as Error).message });
  }
  const known = { ...knownFields(json), verified: false };
  if (typeof json !== "object" || json === null || !("sig" in json) || (json as { sig: unknown }).sig === "") {
    return err({ ...known, reason: "unsigned", detail: "message carries no signature" });
  }
  const parsed = envelopeSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return err({ ...known, reason: "bad-envelope", detail: `${issue.path.join(".") || "envelope"}: ${issue.message}` });
  }
  const envelope = parsed.data;
  const claimed = { messageId: envelope.id, type: envelope.type, issuer: envelope.issuer, correlationId: envelope.correlationId, verified: false };
  if (envelope.kind === "record") return err({ ...claimed, reason: "bad-envelope", detail: "a signed record is state kept in S3, not a message" });

  const key = ctx.trust.get(envelope.issuer);
  if (!key) return err({ ...claimed, reason: "unknown-key", detail: `key "${envelope.issuer}" is not in the trust file` });
  if (!verifyEnvelope(envelope, key.publicKey)) {
    return err({ ...claimed, reason: "bad-signature", detail: `signature does not match key "${envelope.issuer}"` });
  }
  const about = { ...claimed, verified: true, envelope };
  if (!ctx.trust.allows(envelope.issuer, envelope.kind, envelope.type)) {
    return err({ ...about, reason: "not-allowed", detail: `key "${envelope.issuer}" may not send ${envelope.kind} "${envelope.type}"` });
  }

  const now = ctx.now.getTime();
  const issued = Date.parse(envelope.issuedAt);
  const expires = Date.parse(envelope.expiresAt);
  const skew = ctx.skewMs ?? DEFAULT_SKEW_MS;
  if (expires - issued > (ctx.maxLifetimeMs ?? MAX_LIFETIME_MS) || expires < issued) {
    return err({ ...about, reason: "bad-envelope", detail: `lifetime from ${envelope.issuedAt} to ${envelope.expiresAt} is not allowed` });
  }
  if (now > expires + skew) return err({ ...about, reason: "expired", detail: `expired at ${envelope.expiresAt}` });
  if (issued > now + skew) return err({ ...about, reason: "not-yet-valid", detail: `issued in the future at ${envelope.issuedAt}` });

  const schema = ctx.schemaFor(envelope.kind, envelope.type);
  if (!schema) return err({ ...about, reason: "unknown-type", detail: `no handler for ${envelope.kind} "${envelope.type}"` });
  const payload = schema.safeParse(envelope.payload);
  if (!payload.success) {
    const issue = payload.error.issues[0]!;
    return err({ ...about, reason: "bad-payload", detail: `payload.${issue.path.join(".")}: ${issue.message}` });
  }
  return ok({ envelope, payload: payload.data });
}

/** Whatever identifying fields a refused message carries, for the refusal event. */
export function knownFields(json: unknown): Partial<Refusal> {
  if (typeof json !== "object" || json === null) return {};
  const r = json as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" ? v.slice(0, 128) : undefined);
  const fields: Partial<Refusal> = {};
  const id = str(r["id"]);
  const type = str(r["type"]);
  const issuer = str(r["issuer"]);
  const correlationId = str(r["correlationId"]);
  if (id) fields.messageId = id;
  if (type) fields.type = type;
  if (issuer) fields.issuer = issuer;
  if (correlationId) fields.correlationId = correlationId;
  return fields;
}
