import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { CodecError, Decryptor, Digest, Encryptor, compressor, decompressor, endsWhen, fingerprintOf, type BackupKey } from "../src/roles/db/codec.ts";

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

  it("round-trips streams of every awkward size through compression (the zstd tool, Node's zstd, gzip) and chunked AES-256-GCM", async () => {
    const ways = [
      { name: "the zstd tool", compression: "zstd", tool: ["zstd", "-3", "-q", "-c"] },
      { name: "Node's zstd", compression: "zstd", tool: false },
      { name: "gzip", compression: "gzip", tool: false },
    ] as const;
    for (const size of [0, 1, 1024 * 1024 - 1, 1024 * 1024, 1024 * 1024 + 1, 5 * 1024 * 1024 + 17]) {
      for (const way of ways) {
        const data = randomBytes(size);
        const compressing = compressor(way.compression, { tool: way.tool });
        const sealed = await collect(pieces(data), compressing.stream, endsWhen(compressing.done), new Encryptor(key));
        const opened = await collect(pieces(sealed, 7777), new Decryptor(key), decompressor(way.compression));
        assert.ok(opened.equals(data), `${size} bytes with ${way.name}`);
      }
    }
  });

  it("a compressor tool that fails after writing part of its output fails the stream, naming it, instead of ending it short", async () => {
    // Reads everything, writes a little, exits 3: without waiting for its exit, the stream would simply end.
    const compressing = compressor("zstd", { tool: ["sh", "-c", "cat >/dev/null; printf partial; exit 3"] });
    await assert.rejects(
      collect(pieces(randomBytes(300_000)), compressing.stream, endsWhen(compressing.done)),
      (e: unknown) => e instanceof CodecError && e.code === "COMPRESSOR_FAILED" && /sh exited with code 3/.test(e.message),
    );
    const missing = compressor("zstd", { tool: ["bosun-no-such-compressor"] });
    await assert.rejects(collect(pieces(randomBytes(1000)), missing.stream, endsWhen(missing.done)), (e: unknown) => e instanceof Error);
    await assert.rejects(missing.done, (e: unknown) => e instanceof CodecError && /bosun-no-such-compressor could not start/.test(e.message));
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
