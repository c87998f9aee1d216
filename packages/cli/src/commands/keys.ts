import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ConfigError, generateSigningKey, namePattern, trustFileSchema, type TrustFile } from "@bosun/core";

export interface KeysGenerateOptions {
  id: string;
  /** Command types the key may send (`*` for all commands, `event:*` for events). */
  allow: string[];
  dir: string;
  trustFile: string;
  force?: boolean;
}

export interface KeysGenerateResult {
  id: string;
  publicKey: string;
  privateKeyFile: string;
  trustFile: string;
  allow: string[];
}

/** Makes an Ed25519 key pair, writes the private key (mode 0600), and adds the public key to the trust file. */
export async function keysGenerate(options: KeysGenerateOptions): Promise<KeysGenerateResult> {
  if (!namePattern.test(options.id)) throw new ConfigError(`Invalid --id: expected letters, digits, '_' or '-', received ${JSON.stringify(options.id)}`);
  if (options.allow.length === 0) throw new ConfigError(`--allow needs at least one command type ("*" for all, "event:*" for events), received none`);
  const privateKeyFile = resolve(options.dir, `${options.id}.key`);
  if (existsSync(privateKeyFile) && !options.force) {
    throw new ConfigError(`A key named "${options.id}" exists at ${privateKeyFile}; pass --force to replace it`);
  }
  const key = generateSigningKey();
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  await writeFile(privateKeyFile, key.privateKeyPem, { mode: 0o600 });
  await chmod(privateKeyFile, 0o600);
  await writeFile(join(options.dir, `${options.id}.pub`), `${key.publicKey}\n`);
  const trustFile = resolve(options.trustFile);
  const trust = await readTrust(trustFile);
  trust.keys[options.id] = { publicKey: key.publicKey, allow: options.allow };
  await mkdir(dirname(trustFile), { recursive: true });
  await writeFile(trustFile, `${JSON.stringify(trust, null, 2)}\n`);
  return { id: options.id, publicKey: key.publicKey, privateKeyFile, trustFile, allow: options.allow };
}

async function readTrust(path: string): Promise<TrustFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { keys: {} };
    throw error;
  }
  const parsed = trustFileSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new ConfigError(`Trust file ${path} is malformed: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

export function renderKeys(result: KeysGenerateResult): string {
  return [
    `Key "${result.id}" may send: ${result.allow.join(", ")}`,
    `  private key: ${result.privateKeyFile} (keep it secret; give it to the issuer only)`,
    `  trust file:  ${result.trustFile} (copy to every node)`,
  ].join("\n");
}
