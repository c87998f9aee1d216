import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { GetObjectCommand, HeadObjectCommand, AbortMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command, DeleteObjectsCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { AwsError } from "@bosun/core";
import type { AwsClients } from "./clients.ts";
import { PreconditionFailed, isPreconditionFailure } from "./state.ts";

/** An object as listed: key, size, when it was written. */
export interface ObjectInfo {
  key: string;
  bytes: number;
  lastModified: Date;
}

/**
 * Streams a body of any length into one S3 object by multipart upload: parts of `partMB` are
 * sent `queueSize` at a time (so memory stays near partMB × queueSize whatever the size), each
 * part retried by the SDK, and on failure or abort the upload is aborted: no orphan parts stay
 * billed. 10,000 parts of 16 MiB allow 160 GiB; larger backups need a larger part size.
 *
 * lib-storage does the parts; two things are watched beside it, through a middleware on this
 * upload's own requests: a part that fails for good (after the SDK's retries) stops the whole
 * upload at once (lib-storage otherwise waits for its other part uploaders, which can stall on a
 * body they no longer read), and the upload's id, so the multipart upload is aborted whatever
 * state lib-storage was left in.
 */
export async function uploadStream(
  clients: AwsClients,
  options: { bucket: string; key: string; body: Readable; partMB?: number; queueSize?: number; signal?: AbortSignal; onProgress?: (bytes: number) => void },
): Promise<{ bytes: number; etag: string }> {
  const upload = new Upload({
    client: clients.s3,
    params: { Bucket: options.bucket, Key: options.key, Body: options.body },
    partSize: (options.partMB ?? 16) * 1024 * 1024,
    queueSize: options.queueSize ?? 4,
    leavePartsOnError: false,
  });
  let bytes = 0;
  let uploadId: string | undefined;
  let partFailure: unknown;
  const watcher = `bosun-upload-${randomUUID()}`;
  clients.s3.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Bucket?: string; Key?: string };
      if (input.Bucket !== options.bucket || input.Key !== options.key) return next(args);
      try {
        const out = await next(args);
        if (context.commandName === "CreateMultipartUploadCommand") uploadId = (out.output as { UploadId?: string }).UploadId;
        return out;
      } catch (error) {
        if (context.commandName === "UploadPartCommand" && partFailure === undefined) {
          partFailure = error;
          void upload.abort().catch(() => undefined);
        }
        throw error;
      }
    },
    { step: "initialize", name: watcher },
  );
  upload.on("httpUploadProgress", (progress) => {
    bytes = progress.loaded ?? bytes;
    options.onProgress?.(bytes);
  });
  const onAbort = () => void upload.abort().catch(() => undefined);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const out = await upload.done();
    return { bytes, etag: out.ETag ?? "" };
  } catch (error) {
    if (uploadId) {
      await clients.s3.send(new AbortMultipartUploadCommand({ Bucket: options.bucket, Key: options.key, UploadId: uploadId })).catch(() => undefined);
    }
    // The reason the upload stopped: a part that failed for good, or the body's own error, says more than "aborted".
    const cause = partFailure ?? (options.body as Readable & { errored?: Error | null }).errored ?? error;
    throw new AwsError(`upload of s3://${options.bucket}/${options.key} failed: ${(cause as Error).message}`, { cause });
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    clients.s3.middlewareStack.remove(watcher);
  }
}

/** An object's bytes as a stream, or undefined when there is no such object. */
export async function downloadStream(clients: AwsClients, options: { bucket: string; key: string; signal?: AbortSignal }): Promise<{ body: Readable; bytes: number } | undefined> {
  try {
    const out = await clients.s3.send(new GetObjectCommand({ Bucket: options.bucket, Key: options.key }), options.signal ? { abortSignal: options.signal } : {});
    return { body: out.Body as Readable, bytes: out.ContentLength ?? 0 };
  } catch (error) {
    if ((error as { name?: string }).name === "NoSuchKey") return undefined;
    throw error;
  }
}

export async function headObject(clients: AwsClients, bucket: string, key: string): Promise<{ bytes: number } | undefined> {
  try {
    const out = await clients.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { bytes: out.ContentLength ?? 0 };
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 404 || (error as { name?: string }).name === "NotFound") return undefined;
    throw error;
  }
}

/** Every object under a prefix, with sizes and times. */
export async function listObjects(clients: AwsClients, bucket: string, prefix: string, options: { startAfter?: string } = {}): Promise<ObjectInfo[]> {
  const found: ObjectInfo[] = [];
  let token: string | undefined;
  do {
    const page = await clients.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, ...(options.startAfter && !token ? { StartAfter: options.startAfter } : {}) }));
    for (const o of page.Contents ?? []) if (o.Key) found.push({ key: o.Key, bytes: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return found;
}

/** The "folders" directly below a prefix (ListObjectsV2 with a delimiter), each with its trailing slash. */
export async function listPrefixes(clients: AwsClients, bucket: string, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let token: string | undefined;
  do {
    const page = await clients.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, Delimiter: "/", ContinuationToken: token }));
    for (const p of page.CommonPrefixes ?? []) if (p.Prefix) found.push(p.Prefix);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return found;
}

/**
 * Writes an object only if there is none under its key (If-None-Match: *): S3 refuses the write
 * with PreconditionFailed otherwise, so nothing written this way is ever overwritten.
 */
export async function putNewObject(clients: AwsClients, options: { bucket: string; key: string; body: Uint8Array; contentType?: string; signal?: AbortSignal }): Promise<void> {
  try {
    await clients.s3.send(
      new PutObjectCommand({ Bucket: options.bucket, Key: options.key, Body: options.body, IfNoneMatch: "*", ContentType: options.contentType ?? "application/octet-stream" }),
      options.signal ? { abortSignal: options.signal } : {},
    );
  } catch (error) {
    if (isPreconditionFailure(error)) throw new PreconditionFailed(`s3://${options.bucket}/${options.key} already exists`, { cause: error });
    throw error;
  }
}

/** Deletes objects, a thousand a request. */
export async function deleteObjects(clients: AwsClients, bucket: string, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    const out = await clients.s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
    if (out.Errors?.length) throw new AwsError(`could not delete ${out.Errors.length} object(s), first ${out.Errors[0]?.Key}: ${out.Errors[0]?.Message}`);
  }
}

/** Multipart uploads under a prefix that were started and neither completed nor aborted. */
export async function pendingUploads(clients: AwsClients, bucket: string, prefix: string): Promise<{ key: string; uploadId: string; initiated: Date }[]> {
  const found: { key: string; uploadId: string; initiated: Date }[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  do {
    const page = await clients.s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
    for (const u of page.Uploads ?? []) if (u.Key && u.UploadId) found.push({ key: u.Key, uploadId: u.UploadId, initiated: u.Initiated ?? new Date(0) });
    keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
    uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
  } while (keyMarker);
  return found;
}

/** Aborts a multipart upload, so its parts stop costing storage. */
export async function abortUpload(clients: AwsClients, bucket: string, upload: { key: string; uploadId: string }): Promise<void> {
  await clients.s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.key, UploadId: upload.uploadId }));
}
