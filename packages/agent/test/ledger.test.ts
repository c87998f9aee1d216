import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ledger, type LedgerEntry } from "@bosun/agent";

const entry = (id: string, sqsMessageId: string): LedgerEntry => {
  const now = new Date().toISOString();
  return { id, type: "probe", state: "started", sqsMessageId, bootId: "b", expiresAt: now, updatedAt: now };
};

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "bosun-ledger-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("the ledger", () => {
  it("lets exactly one of many concurrent creators claim a command, across ledger instances", () =>
    withDir(async (dir) => {
      // Two instances on one directory stand for two processes sharing a node's ledger.
      const ledgers = [new Ledger({ dir }), new Ledger({ dir })];
      await ledgers[0]!.open();
      for (let trial = 0; trial < 50; trial++) {
        const id = randomUUID();
        const claims = await Promise.all(Array.from({ length: 8 }, (_, i) => ledgers[i % 2]!.create(entry(id, `m${i}`))));
        assert.equal(claims.filter(Boolean).length, 1, `trial ${trial}: one winner`);
        const winner = claims.indexOf(true);
        assert.equal((await ledgers[1]!.get(id))?.sqsMessageId, `m${winner}`, "the entry holds the winner's whole record");
      }
      assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith(".tmp")), [], "no temporary file left behind");
    }));

  it("survives concurrent replacements of one entry (each writer has its own temporary file)", () =>
    withDir(async (dir) => {
      const ledger = new Ledger({ dir });
      await ledger.open();
      const id = randomUUID();
      await Promise.all(Array.from({ length: 16 }, (_, i) => ledger.put({ ...entry(id, `m${i}`), state: "done" })));
      assert.equal((await ledger.get(id))?.state, "done");
    }));

  it("takes command ids in upper case as the envelope does, as the same command", () =>
    withDir(async (dir) => {
      const ledger = new Ledger({ dir });
      await ledger.open();
      const id = randomUUID().toUpperCase();
      assert.equal(await ledger.create(entry(id, "m1")), true);
      assert.equal(await ledger.create(entry(id.toLowerCase(), "m2")), false);
      assert.equal((await ledger.get(id.toLowerCase()))?.sqsMessageId, "m1");
    }));
});
