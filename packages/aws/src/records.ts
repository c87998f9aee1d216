import { randomUUID } from "node:crypto";
import { parseRecord, signEnvelope, type Envelope, type RecordContract, type Refusal, type Signer, type TrustStore } from "@bosun/core";
import type { StateStore } from "./state.ts";

export type RecordRead<P> = { ok: true; value: P | undefined; envelope?: Envelope } | { ok: false; refusal: Refusal & { record: string } };

/** Signs a record's payload as its writer: an envelope of kind `record`, with no lifetime of its own. */
export function signRecord(signer: Signer, type: string, payload: unknown, now = new Date()): Envelope {
  const id = randomUUID();
  const at = now.toISOString();
  return signEnvelope({ v: 1, id, kind: "record", type, issuedAt: at, expiresAt: at, issuer: signer.keyId, correlationId: id, payload }, signer.privateKey);
}

/**
 * State records that make nodes act (desired releases; backup and restore plans), kept in S3
 * as signed envelopes and checked on every read under the same trust policy as commands: a
 * record written by a key that may not send the command it stands for, by an unknown key, or
 * changed after signing is refused, never acted on. Writes never overwrite another writer's.
 */
export class SignedRecords {
  readonly #store: StateStore;
  readonly #trust: TrustStore;

  constructor(deps: { store: StateStore; trust: TrustStore }) {
    this.#store = deps.store;
    this.#trust = deps.trust;
  }

  /** The record's payload (undefined when there is none), or why it was refused. */
  async read<P>(key: string, contract: RecordContract<P>): Promise<RecordRead<P>> {
    const raw = await this.#store.get(key);
    if (raw === undefined) return { ok: true, value: undefined };
    const parsed = parseRecord(raw, contract, this.#trust);
    if (!parsed.ok) return { ok: false, refusal: { ...parsed.error, record: key } };
    return { ok: true, value: parsed.value.payload, envelope: parsed.value.envelope };
  }

  /**
   * Reads the record, lets `change` decide the new payload (undefined: leave it), signs and writes
   * it with a condition on what was read, and starts again if another writer got there first. A
   * record that fails its checks counts as absent: a good one may replace it.
   */
  async update<P>(key: string, contract: RecordContract<P>, signer: Signer, change: (current: P | undefined) => P | undefined): Promise<{ value: P | undefined; written: boolean }> {
    let last: P | undefined;
    const result = await this.#store.update<unknown>(key, (raw) => {
      const current = raw === undefined ? undefined : parseRecord(raw, contract, this.#trust);
      const next = change(current?.ok ? current.value.payload : undefined);
      last = next ?? (current?.ok ? current.value.payload : undefined);
      return next === undefined ? undefined : signRecord(signer, contract.type, contract.payload.parse(next));
    });
    return { value: last, written: result.written };
  }

  /** Removes the record if `predicate` holds of what is there now (and nobody changed it since). */
  async removeIf<P>(key: string, contract: RecordContract<P>, predicate: (current: P) => boolean): Promise<boolean> {
    const current = await this.#store.getVersioned(key);
    if (!current) return false;
    const parsed = parseRecord(current.value, contract, this.#trust);
    if (parsed.ok && !predicate(parsed.value.payload)) return false;
    await this.#store.delete(key, { ifMatch: current.etag });
    return true;
  }
}
