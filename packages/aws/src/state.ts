import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, DeleteObjectCommand } from "@aws-sdk/client-s3";
import type { z } from "zod";
import { AwsError } from "@bosun/core";
import type { AwsClients } from "./clients.ts";

/** Small JSON records in the cluster's bucket: node records, current releases, job records. */
export class StateStore {
  readonly #clients: AwsClients;
  readonly bucket: string;

  constructor(deps: { clients: AwsClients }, options: { bucket: string }) {
    this.#clients = deps.clients;
    this.bucket = options.bucket;
  }

  async put(key: string, value: unknown): Promise<void> {
    await this.#clients.s3.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: JSON.stringify(value, null, 2), ContentType: "application/json" }),
    );
  }

  async get<T = unknown>(key: string): Promise<T | undefined> {
    try {
      const out = await this.#clients.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return JSON.parse(await out.Body!.transformToString()) as T;
    } catch (error) {
      if ((error as { name?: string }).name === "NoSuchKey") return undefined;
      throw error;
    }
  }

  /** A record checked against its schema; a record that fails it is an error naming the key, not data. */
  async getParsed<S extends z.ZodType>(key: string, schema: S): Promise<z.infer<S> | undefined> {
    const raw = await this.get(key);
    if (raw === undefined) return undefined;
    const parsed = schema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new AwsError(`State record s3://${this.bucket}/${key} is malformed at ${issue.path.join(".") || "the top"}: ${issue.message}`);
    }
    return parsed.data;
  }

  async delete(key: string): Promise<void> {
    await this.#clients.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.#clients.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }
}
