import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { StateStore, keyId, nodeKeysKey, type NodeKeys } from "@bosun/aws";
import { generateSigningKey, nodeIssuer, privateKeyFromPem, type Signer } from "@bosun/core";
import { createFileDurably, writeFileDurably } from "./durable.ts";

const keyringSchema = z.object({
  keys: z.array(z.object({ kid: z.string(), privateKeyPem: z.string(), publicKey: z.string(), createdAt: z.iso.datetime() })).min(1),
});
type KeyringFile = z.infer<typeof keyringSchema>;

/**
 * This node's own signing keys, made on the node and never leaving it (0600 in the state
 * directory). The newest key signs; during a rotation the previous one stays registered, so
 * events it signed are still believed, until it is retired. The public halves are registered in
 * the bucket under the node's own prefix (IAM lets a node write nowhere else), which is how the
 * coordinator, a waiting CLI and the other nodes learn which keys speak for this node.
 */
export class NodeKeyring {
  readonly #path: string;
  #file: KeyringFile;

  private constructor(path: string, file: KeyringFile) {
    this.#path = path;
    this.#file = file;
  }

  /** Loads the node's keys from its state directory, making its first key when it has none. */
  static async open(stateDir: string): Promise<NodeKeyring> {
    await mkdir(stateDir, { recursive: true });
    const path = join(stateDir, "node-keys.json");
    // The first key is made once: created exclusively, so a boot sync and an agent starting together agree on it.
    await createFileDurably(path, JSON.stringify({ keys: [newKey()] }), { mode: 0o600 });
    return new NodeKeyring(path, keyringSchema.parse(JSON.parse(await readFile(path, "utf8"))));
  }

  /** The key this node signs with now, named as the node's issuer. */
  signer(nodeId: string): Signer {
    return { keyId: nodeIssuer(nodeId), privateKey: privateKeyFromPem(this.#file.keys.at(-1)!.privateKeyPem) };
  }

  /** The key ids, oldest first. */
  get kids(): string[] {
    return this.#file.keys.map((k) => k.kid);
  }

  /** Registers the public halves of every key held, under the node's own prefix. */
  async register(store: StateStore, topicArn: string, nodeId: string): Promise<void> {
    const record: NodeKeys = { node: nodeId, keys: this.#file.keys.map((k) => ({ kid: k.kid, publicKey: k.publicKey, addedAt: k.createdAt })) };
    await store.put(nodeKeysKey(topicArn, nodeId), record);
  }

  /** Makes a new key; both it and the current one are held (and registered) until `retire`. */
  async rotate(): Promise<string> {
    const key = newKey();
    this.#file = { keys: [...this.#file.keys.slice(-1), key] };
    await this.#save();
    return key.kid;
  }

  /** Drops every key but the newest. */
  async retire(): Promise<string[]> {
    const retired = this.#file.keys.slice(0, -1).map((k) => k.kid);
    this.#file = { keys: this.#file.keys.slice(-1) };
    await this.#save();
    return retired;
  }

  async #save(): Promise<void> {
    // Private keys: readable by the agent alone from the moment they exist.
    await writeFileDurably(this.#path, JSON.stringify(this.#file), { mode: 0o600 });
  }
}

function newKey(): KeyringFile["keys"][number] {
  const key = generateSigningKey();
  return { kid: keyId(key.publicKey), privateKeyPem: key.privateKeyPem, publicKey: key.publicKey, createdAt: new Date().toISOString() };
}
