import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { completeEvents, scanEvents } from "../src/roles/db/binlog-format.ts";
import { parseRestoreTarget } from "@bosun/core";

const magic = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);

/** A v4 event at file offset `at`: header (timestamp, type, server id, length, next position, flags), then `body`. */
function event(at: number, type: number, body: Buffer, options: { timestamp?: number; server?: number } = {}): Buffer {
  const e = Buffer.alloc(19 + body.length);
  e.writeUInt32LE(options.timestamp ?? 1_764_633_600, 0);
  e[4] = type;
  e.writeUInt32LE(options.server ?? 7, 5);
  e.writeUInt32LE(e.length, 9);
  e.writeUInt32LE(at + e.length, 13);
  body.copy(e, 19);
  return e;
}
const gtid = (seq: number, domain: number, flags = 0) => {
  const b = Buffer.alloc(13);
  b.writeBigUInt64LE(BigInt(seq), 0);
  b.writeUInt32LE(domain, 8);
  b[12] = flags;
  return b;
};
/** A query event's body: post-header (thread, time, schema length, error, status length 0), schema, NUL, statement. */
const query = (statement: string, schema = "app") => {
  const post = Buffer.alloc(13);
  post[8] = schema.length;
  return Buffer.concat([post, Buffer.from(schema), Buffer.from([0]), Buffer.from(statement)]);
};

/** Events laid end to end from offset 4, after the magic. */
function file(...events: [number, Buffer, { timestamp?: number; server?: number }?][]): Buffer {
  const parts: Buffer[] = [magic];
  let at = 4;
  for (const [type, body, options] of events) {
    const e = event(at, type, body, options);
    parts.push(e);
    at += e.length;
  }
  return Buffer.concat(parts);
}

describe("binlog events for a point-in-time replay", () => {
  it("reads each transaction's GTID, and where it commits: an XID, a COMMIT query, or the one statement of a standalone GTID", () => {
    const bytes = file(
      [162, gtid(10, 0)],
      [2, query("BEGIN")],
      [16, Buffer.alloc(8)],
      [162, gtid(11, 0, 0x01), { timestamp: 1_764_633_601 }],
      [2, query("DROP TABLE orders")],
      [162, gtid(5, 2), { server: 9 }],
      [2, query("BEGIN")],
      [2, query("COMMIT")],
    );
    const events = [...scanEvents(bytes, 0)];
    assert.deepEqual(events.map((e) => e.opens?.text ?? (e.commits ? "commit" : "-")), ["0-7-10", "-", "commit", "0-7-11", "commit", "2-9-5", "-", "commit"]);
    assert.equal(events[3]!.timestamp, 1_764_633_601);
    assert.equal(events[0]!.offset, 4);
    assert.equal(events.at(-1)!.end, bytes.length);
    // The shipper's cut records the first and last GTID of each domain for the index.
    assert.deepEqual(completeEvents(bytes, 0).gtids, { "0": { first: "0-7-10", last: "0-7-11" }, "2": { first: "2-9-5", last: "2-9-5" } });
  });

  it("stops at the last whole event and refuses headers that do not add up", () => {
    const bytes = file([162, gtid(1, 0)], [16, Buffer.alloc(8)]);
    assert.equal([...scanEvents(bytes.subarray(0, bytes.length - 3), 0)].length, 1, "a cut-off event is not read");
    const bad = Buffer.from(bytes);
    bad.writeUInt32LE(999, 4 + 13);
    assert.throws(() => [...scanEvents(bad, 0)], /does not add up/);
  });

  it("reads --to as a time with its offset, a GTID, FILE:POSITION or latest, and names what it expects otherwise", () => {
    const ok = (text: string) => {
      const parsed = parseRestoreTarget(text);
      assert.ok(parsed.ok, text);
      return parsed.target;
    };
    assert.deepEqual(ok("latest"), { kind: "latest", text: "latest" });
    assert.equal((ok("2026-12-02T09:14:00.900+01:00") as { seconds: number }).seconds, Date.UTC(2026, 11, 2, 8, 14, 0) / 1000);
    assert.deepEqual(ok("0-1-4711"), { kind: "gtid", text: "0-1-4711", domain: 0, server: 1, seq: 4711n });
    assert.deepEqual(ok("mariadb-bin.000042:1234"), { kind: "position", text: "mariadb-bin.000042:1234", file: "mariadb-bin.000042", position: 1234 });
    for (const bad of ["yesterday", "2026-12-02T09:14:00", "mariadb-bin:12", "0-1"]) {
      const parsed = parseRestoreTarget(bad);
      assert.equal(parsed.ok, false, bad);
      assert.match((parsed as { problem: string }).problem, /expected an RFC 3339 time with its offset .*, got "/);
    }
  });
});
