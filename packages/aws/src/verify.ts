import {
  envelopeSchema,
  err,
  eventSchemas,
  isEventType,
  knownFields,
  nodeOfIssuer,
  parseMessage,
  verifyEnvelope,
  TrustStore,
  type Clock,
  type Envelope,
  type ParsedMessage,
  type RecordContract,
  type Refusal,
  type Result,
} from "@bosun/core";
import type { NodeKeyDirectory } from "./node-keys.ts";

/**
 * Checks events from the bus as core's parseMessage does, and that each names its true sender:
 * an event signed by a node's own key (issuer `node.<id>`) must be about that node, and is checked
 * against the keys the node registered; any other signer must be in the trust file with the
 * right to send events (the coordinator). So no node can speak for another.
 */
export class EventVerifier {
  readonly #trust: TrustStore;
  readonly #keys: NodeKeyDirectory;
  readonly #maxBytes: number;
  readonly #clock: Clock;

  constructor(deps: { trust: TrustStore; keys: NodeKeyDirectory; clock?: Clock }, options: { maxBytes: number }) {
    this.#trust = deps.trust;
    this.#keys = deps.keys;
    this.#maxBytes = options.maxBytes;
    this.#clock = deps.clock ?? { now: () => new Date() };
  }

  async verify(raw: string): Promise<Result<ParsedMessage, Refusal>> {
    const nodeId = claimedNode(raw);
    if (nodeId === undefined) return bound(this.#parse(raw, this.#trust), undefined);
    let last: Result<ParsedMessage, Refusal> | undefined;
    // The cached keys first; a signature they do not verify is checked again against fresh ones.
    for (const fresh of [false, true]) {
      const keys = await this.#keys.keysOf(nodeId, { fresh });
      for (const key of keys.length > 0 ? keys : [undefined]) {
        last = this.#parse(raw, key ? this.#trust.with(key) : this.#trust);
        if (last.ok || (last.error.reason !== "bad-signature" && last.error.reason !== "unknown-key")) return bound(last, nodeId);
      }
    }
    if (last && !last.ok && last.error.reason === "unknown-key") {
      return err({ ...last.error, detail: `node ${nodeId} has registered no key that signed this event` });
    }
    return bound(last!, nodeId);
  }

  #parse(raw: string, trust: TrustStore): Result<ParsedMessage, Refusal> {
    return parseMessage(raw, {
      trust,
      now: this.#clock.now(),
      maxBytes: this.#maxBytes,
      schemaFor: (kind, type) => (kind === "event" && isEventType(type) ? eventSchemas[type] : undefined),
    });
  }
}

/** The node a message claims to be signed by, before anything is checked. */
function claimedNode(raw: string): string | undefined {
  try {
    const issuer = (JSON.parse(raw) as { issuer?: unknown }).issuer;
    return typeof issuer === "string" ? nodeOfIssuer(issuer) : undefined;
  } catch {
    return undefined;
  }
}

/** A node's key speaks for its own node only. */
function bound(result: Result<ParsedMessage, Refusal>, signer: string | undefined): Result<ParsedMessage, Refusal> {
  if (!result.ok || signer === undefined) return result;
  const about = (result.value.envelope.payload as { node?: { id?: string } }).node?.id;
  if (about === signer) return result;
  const { envelope } = result.value;
  return err({
    reason: "wrong-sender",
    detail: `an event about node ${about ?? "(none)"} signed by node ${signer}'s key`,
    verified: true,
    envelope,
    messageId: envelope.id,
    type: envelope.type,
    issuer: envelope.issuer,
    correlationId: envelope.correlationId,
  });
}


/**
 * Checks a record a node signed with its own key (a backup's manifest or completion record):
 * the envelope, the record's type and payload, and a signature by a key that node registered.
 * `node` is who the record must come from, when the reader knows (a snapshot names its node).
 */
export async function verifyNodeRecord<P>(raw: unknown, contract: RecordContract<P>, keys: NodeKeyDirectory, node?: string): Promise<Result<{ envelope: Envelope; payload: P; node: string }, Refusal>> {
  const parsed = envelopeSchema.safeParse(raw);
  if (!parsed.success) return err({ ...knownFields(raw), verified: false, reason: "bad-envelope", detail: `record: ${parsed.error.issues[0]?.message ?? "malformed"}` });
  const envelope = parsed.data;
  const signer = nodeOfIssuer(envelope.issuer);
  const about = { messageId: envelope.id, type: envelope.type, issuer: envelope.issuer, verified: false };
  if (envelope.kind !== "record" || envelope.type !== contract.type) return err({ ...about, reason: "unknown-type", detail: `expected a ${contract.type} record, found ${envelope.kind} "${envelope.type}"` });
  if (!signer) return err({ ...about, reason: "unknown-key", detail: `a ${contract.type} record must be signed by a node's own key, not "${envelope.issuer}"` });
  if (node !== undefined && signer !== node) return err({ ...about, reason: "wrong-sender", detail: `a ${contract.type} record of node ${node} signed by node ${signer}` });
  for (const fresh of [false, true]) {
    for (const key of await keys.keysOf(signer, { fresh })) {
      if (!verifyEnvelope(envelope, key.publicKey)) continue;
      const payload = contract.payload.safeParse(envelope.payload);
      if (!payload.success) return err({ ...about, verified: true, envelope, reason: "bad-payload", detail: `payload.${payload.error.issues[0]?.path.join(".")}: ${payload.error.issues[0]?.message}` });
      return { ok: true, value: { envelope, payload: payload.data, node: signer } };
    }
  }
  return err({ ...about, reason: "bad-signature", detail: `no key node ${signer} registered signed this ${contract.type} record` });
}
