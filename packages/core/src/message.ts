import { randomUUID } from "node:crypto";
import type { Envelope, Kind, Target } from "./envelope.ts";
import { signEnvelope } from "./signing.ts";
import type { Signer } from "./trust.ts";

export interface NewMessage {
  kind: Kind;
  type: string;
  payload: unknown;
  target?: Target | undefined;
  correlationId?: string | undefined;
  ttlSeconds: number;
  now?: Date;
  id?: string;
}

/** Builds and signs an envelope. */
export function createMessage(signer: Signer, message: NewMessage): Envelope {
  const now = message.now ?? new Date();
  const id = message.id ?? randomUUID();
  return signEnvelope(
    {
      v: 1,
      id,
      kind: message.kind,
      type: message.type,
      issuedAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + message.ttlSeconds * 1000).toISOString(),
      issuer: signer.keyId,
      ...(message.target ? { target: message.target } : {}),
      correlationId: message.correlationId ?? id,
      payload: message.payload,
    },
    signer.privateKey,
  );
}
