import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { spawn } from "node:child_process";
import { Duplex, PassThrough, Transform, type TransformCallback } from "node:stream";
import { constants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from "node:zlib";
import { BosunError, whereIs } from "@bosun/core";

/** A backup stream could not be encoded or decoded: a wrong key, a truncated or altered object. */
export class CodecError extends BosunError {}

export type Compression = "zstd" | "gzip";

/** Output pieces of 256 KiB rather than zlib's 16 KiB: a fifth less CPU for zstd on a large snapshot. */
const CHUNK_SIZE = 256 * 1024;

/** A compressing stage of a snapshot's pipeline, and when its output is whole. */
export interface Compressing {
  stream: Duplex;
  /**
   * Resolves once the compressor has exited cleanly; rejects, naming it, when it failed. A tool
   * that dies ends its output like a finished one: hold the stream's end on this (see backup.ts).
   */
  done: Promise<void>;
}

/**
 * Compression of a snapshot stream: zstd (level 3) or gzip. zstd runs as a process of its own
 * when Debian's `zstd` is installed: a core beside the agent's, and about 40% less of the agent's
 * CPU than Node's built-in zstd (bench/backup.ts); otherwise in Node. `tool` overrides the
 * command (false: always in Node).
 */
export function compressor(kind: Compression, options: { tool?: readonly string[] | false } = {}): Compressing {
  const tool = options.tool ?? (kind === "zstd" && whereIs("zstd") ? ["zstd", "-3", "-q", "-c"] : false);
  if (tool) return toolStream(tool);
  const stream = kind === "zstd" ? createZstdCompress({ chunkSize: CHUNK_SIZE, params: { [constants.ZSTD_c_compressionLevel]: 3 } }) : createGzip({ level: 6, chunkSize: CHUNK_SIZE });
  return { stream, done: Promise.resolve() };
}

/**
 * Passes a tool's output through, and holds its end until the tool has exited: a dump (or a
 * compressor) cut off by a failure ends its output like a finished one, and must fail the upload
 * instead.
 */
export function endsWhen(done: Promise<void>): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      done.then(() => callback(), (error: unknown) => callback(error as Error));
    },
  });
}

/** A filter program (stdin to stdout) as a stream; argv is an array, never a shell string. */
function toolStream(argv: readonly string[]): Compressing {
  const [file, ...args] = argv;
  const child = spawn(file!, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  let stopped = false;
  child.stderr.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString("utf8")).slice(-500)));
  // Writing to a tool that died fails with EPIPE: its exit says why.
  let inputBroke = false;
  child.stdin.on("error", () => (inputBroke = true));
  const done = new Promise<void>((resolve, reject) => {
    child.once("error", (error) => reject(new CodecError("COMPRESSOR_FAILED", `${file} could not start: ${error.message}`, { cause: error })));
    // A failure is known when the tool exits (its pipes may stay open a while after); success once its output is all read.
    child.once("exit", (code, signal) => {
      if (code === 0) return;
      const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      // Stopped by us because the pipeline failed elsewhere, or cut off from its output: a consequence, said as one.
      const consequence = stopped || signal === "SIGPIPE";
      const fail = () => reject(new CodecError(consequence ? "COMPRESSOR_STOPPED" : "COMPRESSOR_FAILED", `${file} ${consequence ? "was stopped: its output went away" : why}${stderr.trim() ? `: ${stderr.trim()}` : ""}`));
      // What it said on its way out, if it comes soon.
      if (child.stderr.readableEnded) fail();
      else {
        const timer = setTimeout(fail, 200);
        child.stderr.once("end", () => (clearTimeout(timer), fail()));
      }
    });
    child.once("close", (code) => {
      if (code === 0) resolve();
    });
  });
  // Awaited by whoever holds the stream's end on it; until then a failure must not be an unhandled rejection.
  done.catch(() => undefined);
  let ended = false;
  child.stdout.once("end", () => (ended = true));
  const stream = Duplex.from({ writable: child.stdin, readable: child.stdout });
  // Torn down before its output ended (the pipeline failed elsewhere): the tool goes too.
  stream.once("close", () => {
    if (!ended && child.exitCode === null && child.signalCode === null) {
      // Its input broke first: it died by itself (the exit, reported soon, says how); otherwise this stops it.
      stopped = !inputBroke;
      child.kill("SIGKILL");
    }
  });
  return { stream, done };
}

export function decompressor(kind: Compression): Transform {
  return kind === "zstd" ? createZstdDecompress() : createGunzip();
}

/** Counts and hashes what passes through: a stored object's SHA-256 and size, for its manifest. */
export class Digest extends Transform {
  readonly #hash = createHash("sha256");
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }

  /** The hex SHA-256 of everything that passed; call once the stream has ended. */
  sha256(): string {
    return this.#hash.copy().digest("hex");
  }
}

/** A backup encryption key (32 bytes), from a file holding it raw, as 64 hex characters or as base64. */
export interface BackupKey {
  key: Buffer;
  /** The start of the key's SHA-256: recorded in manifests, so a wrong key is named before any download. */
  fingerprint: string;
}

export async function loadBackupKey(path: string): Promise<BackupKey> {
  const raw = await readFile(path);
  const text = raw.toString("utf8").trim();
  const key = raw.length === 32 ? raw : /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, "hex") : Buffer.from(text, "base64");
  if (key.length !== 32) throw new CodecError("BACKUP_KEY", `backup key file ${path} does not hold a 32-byte key (raw, 64 hex characters or base64)`);
  return { key, fingerprint: fingerprintOf(key) };
}

export function fingerprintOf(key: Buffer): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 16);
}

const MAGIC = Buffer.from("BOSUNAE1");
const CHUNK = 1024 * 1024;
const FINAL = 0x8000_0000;
const TAG = 16;

/**
 * AES-256-GCM over a stream of any length, in authenticated chunks of 1 MiB (one GCM call for a
 * whole multi-gigabyte stream would let a reader act on bytes before their tag is checked).
 * Layout: "BOSUNAE1", the key's fingerprint (8 bytes), a random nonce prefix (4 bytes); then
 * chunks of [u32 length | final flag][ciphertext][tag]. Each chunk's nonce is the prefix and its
 * index, and its length word (with the final flag) is authenticated, so chunks cannot be
 * reordered, dropped or cut off without the reader noticing.
 */
export class Encryptor extends Transform {
  readonly #key: BackupKey;
  readonly #prefix = randomBytes(4);
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #index = 0n;
  #started = false;

  constructor(key: BackupKey) {
    super();
    this.#key = key;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (!this.#started) {
      this.push(Buffer.concat([MAGIC, Buffer.from(this.#key.fingerprint, "hex").subarray(0, 8), this.#prefix]));
      this.#started = true;
    }
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    // Keep at least one byte back: the final chunk, however small, must carry the final flag.
    while (this.#pendingBytes > CHUNK) this.#seal(this.#take(CHUNK), false);
    done();
  }

  override _flush(done: TransformCallback): void {
    if (!this.#started) this.push(Buffer.concat([MAGIC, Buffer.from(this.#key.fingerprint, "hex").subarray(0, 8), this.#prefix]));
    this.#seal(this.#take(this.#pendingBytes), true);
    done();
  }

  #take(bytes: number): Buffer {
    const all = Buffer.concat(this.#pending);
    this.#pending = [all.subarray(bytes)];
    this.#pendingBytes = all.length - bytes;
    return all.subarray(0, bytes);
  }

  #seal(plain: Buffer, final: boolean): void {
    const length = Buffer.alloc(4);
    length.writeUInt32BE((plain.length | (final ? FINAL : 0)) >>> 0);
    const cipher = createCipheriv("aes-256-gcm", this.#key.key, nonce(this.#prefix, this.#index++));
    cipher.setAAD(length);
    this.push(Buffer.concat([length, cipher.update(plain), cipher.final(), cipher.getAuthTag()]));
  }
}

export class Decryptor extends Transform {
  readonly #key: BackupKey;
  #parts: Buffer[] = [];
  #size = 0;
  #prefix: Buffer | undefined;
  #index = 0n;
  #ended = false;

  constructor(key: BackupKey) {
    super();
    this.#key = key;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#parts.push(chunk);
    this.#size += chunk.length;
    try {
      this.#open();
      done();
    } catch (error) {
      done(error as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      this.#open();
      if (!this.#ended || this.#size > 0) throw new CodecError("BACKUP_TRUNCATED", "the encrypted stream ends before its final chunk: the object is truncated");
      done();
    } catch (error) {
      done(error as Error);
    }
  }

  /** The next `bytes` bytes, taken off the front (joined once, only when a whole piece is there). */
  #take(bytes: number): Buffer {
    const all = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts);
    this.#parts = all.length > bytes ? [all.subarray(bytes)] : [];
    this.#size -= bytes;
    return all.subarray(0, bytes);
  }

  #peekWord(): number {
    if (this.#parts[0]!.length < 4) this.#parts = [Buffer.concat(this.#parts)];
    return this.#parts[0]!.readUInt32BE(0);
  }

  #open(): void {
    if (!this.#prefix) {
      if (this.#size < 20) return;
      const head = this.#take(20);
      if (!head.subarray(0, 8).equals(MAGIC)) throw new CodecError("BACKUP_NOT_ENCRYPTED", "the object is not a Bosun-encrypted stream");
      const fingerprint = head.subarray(8, 16).toString("hex");
      if (fingerprint !== this.#key.fingerprint) {
        throw new CodecError("BACKUP_WRONG_KEY", `the object was encrypted with key ${fingerprint}, and this node's backup key is ${this.#key.fingerprint}`);
      }
      this.#prefix = Buffer.from(head.subarray(16, 20));
    }
    while (this.#size >= 4) {
      if (this.#ended) throw new CodecError("BACKUP_CORRUPT", "bytes follow the final chunk of the encrypted stream");
      const word = this.#peekWord();
      const length = (word & ~FINAL) >>> 0;
      if (this.#size < 4 + length + TAG) return;
      const sealed = this.#take(4 + length + TAG);
      const decipher = createDecipheriv("aes-256-gcm", this.#key.key, nonce(this.#prefix, this.#index++));
      decipher.setAAD(sealed.subarray(0, 4));
      decipher.setAuthTag(sealed.subarray(4 + length));
      try {
        this.push(Buffer.concat([decipher.update(sealed.subarray(4, 4 + length)), decipher.final()]));
      } catch {
        throw new CodecError("BACKUP_CORRUPT", `chunk ${this.#index - 1n} of the encrypted stream fails its authentication tag: the object was altered`);
      }
      this.#ended = (word & FINAL) !== 0;
    }
  }
}

function nonce(prefix: Buffer, index: bigint): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0);
  n.writeBigUInt64BE(index, 4);
  return n;
}

/** A stream that passes everything through: where no encryption is configured. */
export function identity(): Transform {
  return new PassThrough();
}
