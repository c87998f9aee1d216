import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import type { z } from "zod";
import { AwsError } from "@bosun/core";
import type { AwsClients } from "./clients.ts";

/** A record as read, with the ETag a conditional write of it names. */
export interface Versioned<T> {
  value: T;
  etag: string;
}

/** What a conditional write asks of the object it replaces. */
export type WriteCondition = { ifMatch: string } | { ifNoneMatch: "*" };

/**
 * A conditional write lost: another writer changed (or created, or removed) the object since
 * it was read. S3 answers 412 PreconditionFailed, 409 ConditionalRequestConflict when writes
 * raced, and 404 when an If-Match names an object that is gone.
 */
export class PreconditionFailed extends AwsError {}

export function isPreconditionFailure(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  return e.name === "PreconditionFailed" || e.name === "ConditionalRequestConflict" || status === 412 || status === 409;
}

/** Small JSON records in the cluster's bucket: the fleet snapshot, desired releases, leases, results. */
export class StateStore {
  readonly #clients: AwsClients;
  readonly bucket: string;

  constructor(deps: { clients: AwsClients }, options: { bucket: string }) {
    this.#clients = deps.clients;
    this.bucket = options.bucket;
  }

  /**
   * Writes a record. With a condition, S3 itself refuses the write (PreconditionFailed) when the
   * object is not the one read (If-Match) or already exists (If-None-Match). Returns the new ETag.
   */
  async put(key: string, value: unknown, condition?: WriteCondition): Promise<string> {
    try {
      const out = await this.#clients.s3.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: JSON.stringify(value, null, 2),
          ContentType: "application/json",
          ...(condition && "ifMatch" in condition ? { IfMatch: condition.ifMatch } : {}),
          ...(condition && "ifNoneMatch" in condition ? { IfNoneMatch: "*" } : {}),
        }),
      );
      return out.ETag ?? "";
    } catch (error) {
      const gone = (error as { name?: string }).name === "NoSuchKey" && condition !== undefined;
      if (condition && (isPreconditionFailure(error) || gone)) {
        throw new PreconditionFailed(`s3://${this.bucket}/${key} changed since it was read`, { cause: error });
      }
      throw error;
    }
  }

  async get<T = unknown>(key: string): Promise<T | undefined> {
    return (await this.getVersioned<T>(key))?.value;
  }

  /** A record with its ETag, for a conditional write after. */
  async getVersioned<T = unknown>(key: string): Promise<Versioned<T> | undefined> {
    try {
      const out = await this.#clients.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const text = await out.Body!.transformToString();
      let value: T;
      try {
        value = JSON.parse(text) as T;
      } catch (cause) {
        throw new AwsError(`State record s3://${this.bucket}/${key} is not JSON: ${(cause as Error).message}`, { cause });
      }
      return { value, etag: out.ETag ?? "" };
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

  /**
   * Read, change, write back, without ever overwriting another writer: the write names the ETag
   * it read (or that nothing was there), and on a precondition failure the whole read-change-write
   * runs again. `change` returns the new value, or undefined to leave the record as it is.
   */
  async update<T>(key: string, change: (current: T | undefined) => T | undefined | Promise<T | undefined>, options: { attempts?: number } = {}): Promise<{ value: T | undefined; written: boolean }> {
    const attempts = options.attempts ?? 10;
    for (let attempt = 1; ; attempt++) {
      const current = await this.getVersioned<T>(key);
      const next = await change(current?.value);
      if (next === undefined) return { value: current?.value, written: false };
      try {
        await this.put(key, next, current ? { ifMatch: current.etag } : { ifNoneMatch: "*" });
        return { value: next, written: true };
      } catch (error) {
        if (!(error instanceof PreconditionFailed) || attempt >= attempts) throw error;
        // Someone wrote in between: read their value and decide again, after a short random pause.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * attempt));
      }
    }
  }

  async delete(key: string, condition?: { ifMatch: string }): Promise<void> {
    try {
      await this.#clients.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, ...(condition ? { IfMatch: condition.ifMatch } : {}) }));
    } catch (error) {
      if (condition && (isPreconditionFailure(error) || (error as { name?: string }).name === "NoSuchKey")) {
        throw new PreconditionFailed(`s3://${this.bucket}/${key} changed since it was read`, { cause: error });
      }
      throw error;
    }
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
