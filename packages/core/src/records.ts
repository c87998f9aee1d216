import { envelopeSchema, type Envelope } from "./envelope.ts";
import { err, ok, type Result } from "./result.ts";
import { verifyEnvelope } from "./signing.ts";
import type { TrustStore } from "./trust.ts";
import { knownFields, type Refusal } from "./parse.ts";
import type { RecordContract } from "./contracts/record.ts";

/**
 * Checks a signed state record (a desired release, a backup or restore plan: something that
 * makes nodes act when they read it): the envelope, a known key, a valid signature, the key's
 * right to send the command the record stands for, and the payload's schema. A record is state,
 * not a message: it has no lifetime to check; what supersedes what is in its payload (sequences).
 */
export function parseRecord<P>(raw: unknown, contract: RecordContract<P>, trust: TrustStore): Result<{ envelope: Envelope; payload: P }, Refusal> {
  const claimed = knownFields(raw);
  const parsed = envelopeSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const reason = typeof raw === "object" && raw !== null && !("sig" in raw) ? "unsigned" : "bad-envelope";
    return err({ ...claimed, verified: false, reason, detail: `${issue.path.join(".") || "record"}: ${issue.message}` });
  }
  const envelope = parsed.data;
  if (envelope.kind !== "record" || envelope.type !== contract.type) {
    return err({ ...claimed, verified: false, reason: "unknown-type", detail: `expected a ${contract.type} record, found ${envelope.kind} "${envelope.type}"` });
  }
  const key = trust.get(envelope.issuer);
  if (!key) return err({ ...claimed, verified: false, reason: "unknown-key", detail: `key "${envelope.issuer}" is not in the trust file` });
  if (!verifyEnvelope(envelope, key.publicKey)) return err({ ...claimed, verified: false, reason: "bad-signature", detail: `signature does not match key "${envelope.issuer}"` });
  const about = { ...claimed, verified: true, envelope };
  if (!contract.actsAs.some((type) => trust.allows(envelope.issuer, "command", type))) {
    return err({ ...about, reason: "not-allowed", detail: `key "${envelope.issuer}" may not write a ${contract.type} record (it needs the right to send ${contract.actsAs.join(" or ")})` });
  }
  const payload = contract.payload.safeParse(envelope.payload);
  if (!payload.success) {
    const issue = payload.error.issues[0]!;
    return err({ ...about, reason: "bad-payload", detail: `payload.${issue.path.join(".")}: ${issue.message}` });
  }
  return ok({ envelope, payload: payload.data });
}
