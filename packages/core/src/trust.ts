import { readFileSync } from "node:fs";
import type { KeyObject } from "node:crypto";
import { z } from "zod";
import { KeyError } from "./errors.ts";
import { namePattern, type Kind } from "./envelope.ts";
import { privateKeyFromPem, publicKeyFromBase64 } from "./signing.ts";

/**
 * The trust file: public keys an agent accepts, and per key the message types it may send.
 * `allow` entries: a command type (`release`), `*` for every command, `event:<type>` or `event:*`.
 */
export const trustFileSchema = z.object({
  keys: z.record(
    z.string().regex(namePattern),
    z.object({ publicKey: z.string().min(1), allow: z.array(z.string().min(1)) }).strict(),
  ),
});
export type TrustFile = z.infer<typeof trustFileSchema>;

export interface TrustedKey {
  id: string;
  publicKey: KeyObject;
  allow: readonly string[];
}

export class TrustStore {
  readonly #keys: Map<string, TrustedKey>;

  constructor(keys: Iterable<TrustedKey>) {
    this.#keys = new Map([...keys].map((k) => [k.id, k]));
  }

  static fromJson(json: unknown, source = "trust file"): TrustStore {
    const parsed = trustFileSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new KeyError(`Invalid ${source} at ${issue.path.join(".") || "top level"}: ${issue.message}`);
    }
    const keys: TrustedKey[] = [];
    for (const [id, entry] of Object.entries(parsed.data.keys)) {
      try {
        keys.push({ id, publicKey: publicKeyFromBase64(entry.publicKey), allow: entry.allow });
      } catch (cause) {
        throw new KeyError(`Invalid public key for "${id}" in ${source}: ${(cause as Error).message}`, { cause });
      }
    }
    return new TrustStore(keys);
  }

  static load(path: string): TrustStore {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (cause) {
      throw new KeyError(`Cannot read trust file ${path}: ${(cause as Error).message}`, { cause });
    }
    try {
      return TrustStore.fromJson(JSON.parse(text), `trust file ${path}`);
    } catch (cause) {
      if (cause instanceof KeyError) throw cause;
      throw new KeyError(`Trust file ${path} is not valid JSON: ${(cause as Error).message}`, { cause });
    }
  }

  /** This store and one more key (a node's registered key, for checking that node's events). */
  with(key: TrustedKey): TrustStore {
    return new TrustStore([...this.#keys.values(), key]);
  }

  get(id: string): TrustedKey | undefined {
    return this.#keys.get(id);
  }

  allows(keyId: string, kind: Kind, type: string): boolean {
    const key = this.#keys.get(keyId);
    if (!key) return false;
    return key.allow.some((rule) =>
      kind === "command" ? rule === "*" || rule === type : rule === "event:*" || rule === `event:${type}`,
    );
  }
}

/** A private key and the id the trust file knows it by. */
export interface Signer {
  keyId: string;
  privateKey: KeyObject;
}

export function loadSigner(keyId: string, path: string): Signer {
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch (cause) {
    throw new KeyError(`Cannot read signing key ${path}: ${(cause as Error).message}`, { cause });
  }
  try {
    return { keyId, privateKey: privateKeyFromPem(pem) };
  } catch (cause) {
    throw new KeyError(`Signing key ${path} is not an Ed25519 private key: ${(cause as Error).message}`, { cause });
  }
}
