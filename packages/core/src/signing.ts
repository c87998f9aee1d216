import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import canonicalize from "canonicalize";
import type { Envelope, UnsignedEnvelope } from "./envelope.ts";

/** RFC 8785 canonical JSON: the same text for the same value, whatever order its keys came in. */
export function canonicalJson(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new TypeError("value cannot be canonicalised");
  return text;
}

/** Bytes that a signature covers: the RFC 8785 canonical JSON of the envelope without `sig`. */
export function signedBytes(envelope: UnsignedEnvelope): Buffer {
  const { sig: _ignored, ...rest } = envelope as Envelope;
  return Buffer.from(canonicalJson(rest), "utf8");
}

export function signEnvelope(envelope: UnsignedEnvelope, privateKey: KeyObject): Envelope {
  const sig = sign(null, signedBytes(envelope), privateKey).toString("base64");
  return { ...envelope, sig };
}

export function verifyEnvelope(envelope: Envelope, publicKey: KeyObject): boolean {
  return verify(null, signedBytes(envelope), publicKey, Buffer.from(envelope.sig, "base64"));
}

export interface GeneratedKey {
  privateKeyPem: string;
  /** Base64 DER (SPKI) of the public key, as the trust file holds it. */
  publicKey: string;
}

export function generateSigningKey(): GeneratedKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKey: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
  };
}

export function privateKeyFromPem(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== "ed25519") throw new TypeError(`expected an Ed25519 key, found ${key.asymmetricKeyType}`);
  return key;
}

export function publicKeyFromBase64(der: string): KeyObject {
  const key = createPublicKey({ key: Buffer.from(der, "base64"), format: "der", type: "spki" });
  if (key.asymmetricKeyType !== "ed25519") throw new TypeError(`expected an Ed25519 key, found ${key.asymmetricKeyType}`);
  return key;
}
