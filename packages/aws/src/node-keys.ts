import { createHash } from "node:crypto";
import { z } from "zod";
import { AwsError, nodeIssuerPrefix, publicKeyFromBase64, type TrustedKey } from "@bosun/core";
import type { StateStore } from "./state.ts";

/**
 * The public keys one node signs its events with, registered by the node itself under its own
 * prefix in the bucket. On AWS a node's IAM role may write only below
 * `state/nodes/${ec2:SourceInstanceArn}/`, so no node can register a key for another node id.
 * Two keys at once while a key is rotated; then the old one is removed.
 */
export const nodeKeysSchema = z
  .object({
    node: z.string(),
    keys: z
      .array(z.object({ kid: z.string().regex(/^[0-9a-f]{16}$/), publicKey: z.string().min(1), addedAt: z.iso.datetime() }).strict())
      .min(1)
      .max(4),
  })
  .strict();
export type NodeKeys = z.infer<typeof nodeKeysSchema>;

/** A key's id: the start of the SHA-256 of its public key. */
export function keyId(publicKey: string): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

/**
 * A node's EC2 instance ARN, from the cluster's topic ARN (same partition, region and account)
 * and its node id: the name IAM knows the node's session by (`ec2:SourceInstanceArn`).
 */
export function instanceArn(topicArn: string, nodeId: string): string {
  const [, partition, , region, account] = topicArn.split(":");
  if (!partition || !region || !account) throw new AwsError(`Cannot read partition, region and account from topic ARN ${topicArn}`);
  return `arn:${partition}:ec2:${region}:${account}:instance/${nodeId}`;
}

export const nodeKeysKey = (topicArn: string, nodeId: string) => `state/nodes/${instanceArn(topicArn, nodeId)}/keys.json`;

/**
 * Looks up the keys nodes registered, for whoever verifies their events (the coordinator, a
 * waiting CLI, a balancer). Answers are cached for a few minutes; a signature that fails against
 * a cached answer is checked again against a fresh one, so a node's new key is believed at once.
 */
export class NodeKeyDirectory {
  readonly #store: StateStore;
  readonly #topicArn: string;
  readonly #cacheMs: number;
  readonly #cache = new Map<string, { at: number; keys: Promise<TrustedKey[]> }>();

  constructor(deps: { store: StateStore }, options: { topicArn: string; cacheMs?: number }) {
    this.#store = deps.store;
    this.#topicArn = options.topicArn;
    // Five minutes: a new key is believed at once (a failed check looks again), a retired one for
    // at most this long by a verifier that had it cached; at 1,000 nodes, 12 GETs a node an hour.
    this.#cacheMs = options.cacheMs ?? 5 * 60_000;
  }

  /** The keys registered for a node (none when it registered none); `fresh` skips the cache. */
  keysOf(nodeId: string, options: { fresh?: boolean } = {}): Promise<TrustedKey[]> {
    const cached = this.#cache.get(nodeId);
    if (cached && !options.fresh && Date.now() - cached.at < this.#cacheMs) return cached.keys;
    const keys = this.#load(nodeId);
    this.#cache.set(nodeId, { at: Date.now(), keys });
    keys.catch(() => this.#cache.delete(nodeId));
    return keys;
  }

  async #load(nodeId: string): Promise<TrustedKey[]> {
    const record = await this.#store.getParsed(nodeKeysKey(this.#topicArn, nodeId), nodeKeysSchema);
    if (!record || record.node !== nodeId) return [];
    return record.keys.map((k) => ({ id: `${nodeIssuerPrefix}${nodeId}`, publicKey: publicKeyFromBase64(k.publicKey), allow: ["event:*"] }));
  }
}
