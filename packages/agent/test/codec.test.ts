import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { CodecError, Decryptor, Digest, Encryptor, compressor, decompressor, fingerprintOf, type BackupKey } from "../src/roles/db/codec.ts";

const keyOf = (key: Buffer): BackupKey => ({ key, fingerprint: fingerprintOf(key) });

async function collect(source: Readable, ...stages: NodeJS.ReadWriteStream[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(source, ...(stages as [NodeJS.ReadWriteStream]), new Writable({ write: (chunk: Buffer, _e, done) => (out.push(chunk), done()) }));
  return Buffer.concat(out);
}

/** A readable that hands `data` over in pieces of `piece` bytes, as a child's stdout would. */
const pieces = (data: Buffer, piece = 65536) => Readable.from((function* () { for (let i = 0; i < data.length; i += piece) yield data.subarray(i, i + piece); })());

describe("the backup codec", () => {
  const key = keyOf(randomBytes(32));

  it("round-trips streams of every awkward size through compression and chunked AES-256-GCM", async () => {
    for (const size of [0, 1, 1024 * 1024 - 1, 1024 * 1024, 1024 * 1024 + 1, 5 * 1024 * 1024 + 17]) {
      for (const compression of ["zstd", "gzip"] as const) {
        const data = randomBytes(size);
        const sealed = await collect(pieces(data), compressor(compression), new Encryptor(key));
        const opened = await collect(pieces(sealed, 7777), new Decryptor(key), decompressor(compression));
        assert.ok(opened.equals(data), `${size} bytes with ${compression}`);
      }
    }
  });

  it("names a wrong key before decrypting anything", async () => {
    const sealed = await collect(pieces(randomBytes(2000)), new Encryptor(key));
    const other = keyOf(randomBytes(32));
    await assert.rejects(collect(pieces(sealed), new Decryptor(other)), (error: unknown) => error instanceof CodecError && error.code === "BACKUP_WRONG_KEY" && error.message.includes(key.fingerprint));
  });

  it("refuses an altered byte, a dropped chunk and a truncated stream", async () => {
    const sealed = await collect(pieces(randomBytes(3 * 1024 * 1024)), new Encryptor(key));
    const flipped = Buffer.from(sealed);
    flipped[100_000]! ^= 1;
    await assert.rejects(collect(pieces(flipped), new Decryptor(key)), (e: unknown) => e instanceof CodecError && e.code === "BACKUP_CORRUPT");
    // The first chunk (after the 20-byte header) is 4 + 1 MiB + 16 bytes; drop it.
    const chunk = 4 + 1024 * 1024 + 16;
    const dropped = Buffer.concat([sealed.subarray(0, 20), sealed.subarray(20 + chunk)]);
    await assert.rejects(collect(pieces(dropped), new Decryptor(key)), (e: unknown) => e instanceof CodecError && e.code === "BACKUP_CORRUPT");
    const cut = sealed.subarray(0, 20 + 2 * chunk);
    await assert.rejects(collect(pieces(cut), new Decryptor(key)), (e: unknown) => e instanceof CodecError && e.code === "BACKUP_TRUNCATED");
  });

  it("hashes and counts what passes", async () => {
    const data = randomBytes(100_000);
    const digest = new Digest();
    await collect(pieces(data), digest);
    assert.equal(digest.bytes, 100_000);
    assert.equal(digest.sha256(), (await import("node:crypto")).createHash("sha256").update(data).digest("hex"));
  });
});
