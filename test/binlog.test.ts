import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { join } from "node:path";
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { NodeKeyDirectory, StateStore, binlogKeys, ensureTopic, listObjects, verifyChain, type ChainReport } from "@bosun/aws";
import type { BinlogSegment, Envelope } from "@bosun/core";
import { continues } from "@bosun/aws";
import { BinlogFormatError, completeEvents } from "../packages/agent/src/roles/db/binlog-format.ts";
import { TestFleet, type TestProcess } from "./helpers/fleet.ts";
import { MariaDb, mariadbTools } from "./helpers/mariadb.ts";
import { needs } from "./helpers/tools.ts";
import { Moto, motoMissing } from "./helpers/moto.ts";
import { S3Proxy } from "./helpers/s3-proxy.ts";

/** A v4 event of `length` bytes at file offset `at`: timestamp, type, server id, length, next position, flags, then a body. */
function event(at: number, length: number, options: { type?: number; timestamp?: number } = {}): Buffer {
  const e = Buffer.alloc(length);
  e.writeUInt32LE(options.timestamp ?? 1_764_633_600, 0);
  e[4] = options.type ?? 2;
  e.writeUInt32LE(7, 5);
  e.writeUInt32LE(length, 9);
  e.writeUInt32LE(at + length, 13);
  return e;
}
const run = promisify(execFile);
const magic = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);

/** A request's path without its query (the SDK adds `?x-id=PutObject`). */
function pathOf(url: string): string {
  return new URL(url, "http://s3").pathname;
}

/** The offsets where two buffers of one length differ. */
function differences(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

/**
 * The one byte a shipped file may differ in from the file on disk now: the server marks the file
 * it writes "in use" (LOG_EVENT_BINLOG_IN_USE_F, bit 0 of the format description event's flags,
 * at offset 4 + 17) and clears the bit when it closes the file. A segment shipped while the file
 * was open carries the bit as the server wrote it then.
 */
function sameButInUse(shipped: Buffer, onDisk: Buffer): number[] {
  const flags = 4 + 17;
  return shipped.length > flags && shipped[flags] === (onDisk[flags]! | 0x01) && shipped[flags] !== onDisk[flags] ? [flags] : [];
}

describe("binlog event framing (headers only)", () => {
  it("cuts after the last complete event, never inside one, and sees a rotate event close the file", () => {
    const file = Buffer.concat([magic, event(4, 100, { timestamp: 0, type: 15 }), event(104, 50, { timestamp: 1_764_633_601 }), event(154, 40, { type: 4, timestamp: 1_764_633_602 })]);
    const whole = completeEvents(file, 0);
    assert.deepEqual(whole, { end: 194, events: 3, firstTimestamp: 1_764_633_601, lastTimestamp: 1_764_633_602, closes: true, gtids: {} });
    const partial = completeEvents(file.subarray(0, 170), 0);
    assert.equal(partial.end, 154, "the event cut off at 170 is left for the next segment");
    assert.equal(partial.closes, false);
    assert.equal(completeEvents(file.subarray(104, 160), 104).end, 154, "a run from an earlier segment's end");
    assert.equal(completeEvents(file.subarray(0, 3), 0).events, 0, "not even the magic yet");
  });

  it("a chain continues in the same file at the offset it ended, or in the next file from 0 once the last one closed; anything else names the break", () => {
    const closed = { file: "binlog.000007", end: 5000, closes: true };
    const open = { ...closed, closes: false };
    assert.equal(continues(open, { file: "binlog.000007", start: 5000 }), undefined);
    assert.equal(continues(closed, { file: "binlog.000008", start: 0 }), undefined);
    assert.equal(continues(open, { file: "binlog.000007", start: 5100 }), "binlog.000007 continues at 5100, but the segment before ends at 5000");
    assert.equal(continues(open, { file: "binlog.000008", start: 0 }), "binlog.000007 was shipped up to 5000 only, and the next segment is of binlog.000008");
    assert.equal(continues(closed, { file: "binlog.000009", start: 0 }), "binlog.000009 follows binlog.000007: the files between are missing");
    assert.equal(continues(closed, { file: "binlog.000008", start: 4 }), "binlog.000008 starts at 4, not at its beginning");
  });

  it("refuses bytes that are not a binary log: a bad magic, or a length and next position that disagree", () => {
    assert.throws(() => completeEvents(Buffer.from("hello world, not a binlog"), 0), (e: unknown) => e instanceof BinlogFormatError && e.code === "BINLOG_BAD_MAGIC");
    const bad = event(4, 60);
    bad.writeUInt32LE(999, 13);
    assert.throws(() => completeEvents(Buffer.concat([magic, bad]), 0), (e: unknown) => e instanceof BinlogFormatError && /at 4 is 60 bytes long but says the next starts at 999/.test(e.message));
  });
});

// A missing MariaDB tool fails the file, naming its package (.ci/run installs them); moto, which Debian does not package, skips it saying how to install it.
const missing = needs(mariadbTools).skip || motoMissing();

/**
 * Binary-log shipping with real parts: a mariadbd with binary logging under a steady write load,
 * a `bosun agent` for its db node whose S3 (moto) goes through a proxy the tests steer, and the
 * archive read back from S3 and compared with the server's own files byte for byte.
 */
describe("db role: binary-log shipping", { skip: missing ?? false }, () => {
  let moto: Moto;
  let proxy: S3Proxy;
  let fleet: TestFleet;
  let db: MariaDb;
  let agent: TestProcess | undefined;
  let store: StateStore;
  let keys: NodeKeyDirectory;
  let bucket: string;
  let server: string;
  const testStarted = Date.now();
  const load = { running: false, commits: 0, done: Promise.resolve() };

  const startAgent = async () => {
    agent = await fleet.startAgent("db-1", ["db"], {
      AWS_ENDPOINT_URL_S3: proxy.endpoint,
      BOSUN_DB: JSON.stringify({ socket: db.socket, user: "root", dataDir: db.dataDir, shipping: { enabled: "auto", intervalMs: 1000, behindAlertSeconds: 3 } }),
    });
  };

  /** A steady write load: about 40 commits a second of a row with 1 KiB of data, until stopped. */
  const startLoad = () => {
    load.running = true;
    load.done = (async () => {
      const c = await db.connect();
      try {
        while (load.running) {
          await c.query("INSERT INTO app.events (data) VALUES (?)", [randomBytes(1024)]);
          load.commits += 1;
          await new Promise((r) => setTimeout(r, 25));
        }
      } finally {
        await c.end();
      }
    })();
  };
  const stopLoad = async () => {
    load.running = false;
    await load.done;
  };

  const written = async () => (await db.query<{ File: string; Position: number }[]>("SHOW MASTER STATUS"))[0]!;
  const binlogFiles = async () => (await db.query<{ Log_name: string }[]>("SHOW BINARY LOGS")).map((r) => r.Log_name);

  /** The index as S3 has it, in order. */
  const index = async (): Promise<BinlogSegment[]> => {
    const entries = await listObjects(fleet.clients, bucket, binlogKeys.index(server));
    const out: BinlogSegment[] = [];
    for (const e of entries.sort((a, b) => a.key.localeCompare(b.key))) out.push((await store.get<Envelope>(e.key))!.payload as BinlogSegment);
    return out;
  };
  const objectBytes = async (key: string): Promise<Buffer> => {
    const out = await fleet.clients.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await out.Body!.transformToByteArray());
  };

  /** Waits until the archive holds the server's binary log up to `at` (a file and position the server reported). */
  const shippedTo = async (at: { File: string; Position: number }, timeoutMs = 30_000): Promise<number> => {
    const started = Date.now();
    for (;;) {
      const entries = await index();
      const reached = entries.some((s) => s.file > at.File || (s.file === at.File && s.end >= Number(at.Position)));
      if (reached) return Date.now() - started;
      if (Date.now() - started > timeoutMs) throw new Error(`the archive did not reach ${at.File}:${at.Position} within ${timeoutMs} ms; it ends at ${JSON.stringify(entries.at(-1))}; agent logs:\n${agent?.logs.items.slice(-10).map((l) => JSON.stringify(l).slice(0, 400)).join("\n")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  /**
   * Concatenates each file's segments and compares them with the file on disk, byte for byte, up
   * to where they end; each file's segments start at 0 and follow each other with no gap or
   * overlap; a file the server has closed is shipped whole. Returns the binlog bytes covered.
   */
  const assertCoversBinlog = async (entries: BinlogSegment[]): Promise<number> => {
    const files = await binlogFiles();
    const current = (await written()).File;
    let covered = 0;
    for (const file of new Set(entries.map((s) => s.file))) {
      const segments = entries.filter((s) => s.file === file);
      let at = 0;
      for (const s of segments) {
        assert.equal(s.start, at, `${file}: segment ${s.seq} starts at ${s.start}, where the one before ended (${at})`);
        at = s.end;
      }
      const onDisk = await readFile(join(db.dataDir, file));
      const shipped = Buffer.concat(await Promise.all(segments.map((s) => objectBytes(s.key))));
      assert.equal(shipped.length, at, `${file}: the segments hold ${at} bytes`);
      assert.deepEqual(differences(shipped, onDisk.subarray(0, at)), sameButInUse(shipped, onDisk), `${file}: the segments are the file's bytes 0..${at}, byte for byte`);
      if (file !== current && files.includes(file)) {
        assert.equal(at, onDisk.length, `${file} is closed: shipped to its end`);
        assert.equal(segments.at(-1)!.closes, true, `${file}'s last segment closes it`);
      }
      covered += at;
    }
    return covered;
  };

  const chainReport = (): Promise<ChainReport> => verifyChain({ clients: fleet.clients, bucket, store, keys }, server);
  /** The first alert with this code (whose message matches `about`, when given). */
  const alert = (code: string, timeoutMs = 60_000, about?: RegExp) =>
    fleet.waitForEvent(
      (e) => e.type === "alert" && (e.payload as { code?: string }).code === code && (!about || about.test((e.payload as { message: string }).message)),
      `an alert ${code}${about ? ` matching ${about}` : ""}`,
      timeoutMs,
    );
  const putBytes = (key: string, body: Buffer) => fleet.clients.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));

  before(async () => {
    moto = await Moto.start();
    proxy = await S3Proxy.start(moto.endpoint);
    fleet = await TestFleet.start({}, { s3Endpoint: moto.endpoint });
    bucket = `b-${fleet.cluster}`;
    store = new StateStore({ clients: fleet.clients }, { bucket });
    keys = new NodeKeyDirectory({ store }, { topicArn: await ensureTopic(fleet.clients, fleet.cluster) });
    db = await MariaDb.start({ serverId: 21, name: "shipping" });
    await db.query("CREATE DATABASE app; CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, data VARBINARY(2048)) ENGINE=InnoDB");
    await db.query("FLUSH BINARY LOGS");
    startLoad();
    await startAgent();
    const record = JSON.parse(await readFile(join(fleet.stateDir("db-1"), "db-server.json"), "utf8")) as { uuid: string; epoch: number };
    server = `${record.uuid}-${record.epoch}`;
  });

  after(async () => {
    await stopLoad().catch(() => undefined);
    await fleet?.close();
    await proxy?.close();
    await moto?.stop();
    await db?.destroy();
  });

  it("ships the closed files and the active one, cut at events, within seconds of a commit, follows FLUSH BINARY LOGS, and covers the binary log byte for byte", async () => {
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      await db.query("INSERT INTO app.events (data) VALUES ('marker')");
      const at = await written();
      delays.push(await shippedTo(at));
      if (i === 2) await db.query("FLUSH BINARY LOGS");
    }
    delays.sort((a, b) => a - b);
    console.log(`commit → segment in S3 (ms, sorted): ${delays.join(", ")}`);
    assert.ok(delays.at(-1)! < 3000, `every commit is in S3 within 3 s (took ${delays.join(", ")} ms)`);
    const entries = await index();
    assert.ok(new Set(entries.map((s) => s.file)).size >= 3, "segments of at least three files: the two closed by FLUSH BINARY LOGS and the active one");
    assert.ok(entries.some((s) => s.file === "binlog.000001" && s.closes), "the file closed before the agent started went up whole");
    for (const s of entries) {
      const [first, last] = [Date.parse(s.firstEventAt), Date.parse(s.lastEventAt)];
      assert.ok(first <= last && first >= testStarted - 120_000 && last <= Date.now() + 2000, `segment ${s.seq}'s event times come from its events: ${s.firstEventAt} to ${s.lastEventAt}`);
    }
    await assertCoversBinlog(entries);
    const report = await chainReport();
    assert.deepEqual(report.problems, []);
    assert.equal(report.ok, true);

    // A file whose first segment went up while the server had it open (its in-use flag set) is read by mariadb-binlog as the server's own copy is.
    const closedFile = entries.find((s) => s.closes && s.file !== "binlog.000001")!.file;
    const shipped = Buffer.concat(await Promise.all(entries.filter((s) => s.file === closedFile).map((s) => objectBytes(s.key))));
    assert.equal(shipped[21]! & 0x01, 1, `${closedFile} was first shipped while in use`);
    const copy = join(fleet.dir, `shipped-${closedFile}`);
    await writeFile(copy, shipped);
    const decode = async (path: string) => (await run("mariadb-binlog", ["--no-defaults", path], { maxBuffer: 64 * 1024 * 1024 })).stdout.match(/end_log_pos \d+/g) ?? [];
    const events = await decode(copy);
    assert.ok(events.length > 10, "mariadb-binlog reads the shipped file");
    assert.deepEqual(events, await decode(join(db.dataDir, closedFile)), "every event, at the same positions as in the server's file");
  });

  it("an agent killed and started again resumes exactly where the index ends: no gap, no duplicate", async () => {
    await shippedTo(await written());
    const before = await index();
    agent!.child.kill("SIGKILL");
    await agent!.exited;
    // The server keeps writing, and rotates, while nobody ships.
    await db.query("FLUSH BINARY LOGS");
    const whileDown = await written();
    await startAgent();
    await shippedTo(whileDown);
    const after = await index();
    const resumed = after[before.length]!;
    const last = before.at(-1)!;
    assert.equal(resumed.seq, last.seq + 1, "the next sequence number");
    assert.ok((resumed.file === last.file && resumed.start === last.end) || (last.closes && resumed.start === 0), `segment ${resumed.seq} (${resumed.file}:${resumed.start}) goes on from ${last.file}:${last.end}`);
    await assertCoversBinlog(after);
    assert.deepEqual((await chainReport()).problems, []);
  });

  it("an agent killed after a segment went up but before its index entry: the next run adopts that segment instead of sending it again", async () => {
    const entryFailed = (r: { method: string; url: string; action: string }) => r.method === "PUT" && r.url.includes("/index/") && r.action === "fail";
    const seenBefore = proxy.seen.length;
    proxy.rule = (r) => (r.method === "PUT" && r.url.includes("/index/") ? "fail" : "pass");
    await proxy.waitFor((r) => entryFailed(r) && proxy.seen.indexOf(r) >= seenBefore, "an index entry refused");
    // Several passes retry meanwhile: each must stop at the same segment, not send a longer one.
    await proxy.waitFor((r) => entryFailed(r) && proxy.seen.filter(entryFailed).length >= 6, "a few retries of the entry");
    agent!.child.kill("SIGKILL");
    await agent!.exited;
    const refused = proxy.seen.slice(seenBefore).find(entryFailed)!;
    const seq = /\/index\/([0-9]{10})\.json/.exec(pathOf(refused.url))![1]!;
    const segmentPuts = proxy.seen.filter((r) => r.method === "PUT" && pathOf(r.url).includes(`/segments/${seq}-`) && r.action === "pass");
    assert.equal(segmentPuts.length, 1, `one segment ${seq} went up while its entry could not be written: ${segmentPuts.map((r) => r.url).join(", ")}`);
    proxy.release();
    await db.query("INSERT INTO app.events (data) VALUES ('after the crash')");
    const target = await written();
    await startAgent();
    await agent!.waitForLog((r) => r.msg === "adopted a segment uploaded before without its index entry", "the orphan segment adopted");
    await shippedTo(target);
    const entries = await index();
    const orphanKey = pathOf(segmentPuts[0]!.url);
    assert.ok(entries.some((e) => orphanKey.endsWith(`/${e.key}`)), `the segment uploaded before the crash is in the index: ${orphanKey}`);
    const report = await chainReport();
    assert.deepEqual(report.problems, []);
    assert.deepEqual(report.unindexed, [], "no segment left outside the index");
    assert.equal(proxy.seen.filter((r) => r.method === "PUT" && pathOf(r.url) === orphanKey).length, 1, "and it was not sent again");
    await assertCoversBinlog(entries);
  });

  it("while S3 is unreachable it keeps its place and says so, then ships everything once S3 is back; uploads stay within 1.1x of the binary log", async () => {
    proxy.rule = () => "fail";
    await alert("BINLOG_SHIPPING_STALLED");
    await db.query("FLUSH BINARY LOGS");
    await alert("BINLOG_SHIPPING_BEHIND");
    const duringOutage = await written();
    proxy.release();
    await shippedTo(duringOutage, 60_000);
    await alert("BINLOG_SHIPPING_RESUMED");
    const entries = await index();
    const covered = await assertCoversBinlog(entries);
    assert.deepEqual((await chainReport()).problems, []);
    // Every byte that reached S3 through this node's endpoint for the segments read above, segments and index entries alike (a later one may be going up as this runs).
    const lastSeq = entries.at(-1)!.seq;
    const seqOf = (url: string) => Number(/\/(?:segments|index)\/([0-9]{10})[-.]/.exec(pathOf(url))?.[1] ?? Number.NaN);
    const archivePuts = proxy.seen.filter((r) => r.method === "PUT" && r.action === "pass" && r.url.includes("/backups/binlog/") && seqOf(r.url) <= lastSeq);
    const stored = archivePuts.reduce((sum, r) => sum + r.bytes, 0);
    const segmentBytes = entries.reduce((sum, s) => sum + s.bytes, 0);
    const indexBytes = (await listObjects(fleet.clients, bucket, binlogKeys.index(server))).filter((o) => seqOf(o.key) <= lastSeq).reduce((sum, o) => sum + o.bytes, 0);
    const puts = archivePuts.length;
    console.log(`binlog ${covered} B in ${entries.length} segments; segment bytes ${segmentBytes} B (${(segmentBytes / covered).toFixed(3)}x); index entries ${indexBytes} B; all ${puts} PUT bodies ${stored} B (${(stored / covered).toFixed(3)}x); ${load.commits} commits`);
    assert.equal(segmentBytes, covered, "each byte of the binary log went up once");
    assert.ok(stored / covered <= 1.1, `upload amplification ${(stored / covered).toFixed(3)} ≤ 1.1`);
  });

  it("bosun backup binlog verify finds a missing segment and a flipped byte, naming each", async () => {
    // Four segments at least, whichever tests ran before.
    while ((await index()).length < 4) await shippedTo(await written());
    const ok = await fleet.bosun(["backup", "binlog", "verify", "--server", server, "--json"]);
    assert.equal(ok.code, 0, ok.stderr + ok.stdout);
    const entries = await index();
    const gone = entries[1]!;
    const flipped = entries[3]!;
    const bytes = await objectBytes(flipped.key);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await putBytes(flipped.key, bytes);
    await fleet.clients.s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: gone.key }));
    const out = await fleet.bosun(["backup", "binlog", "verify", "--server", server, "--json"]);
    assert.equal(out.code, 1, "a broken chain exits 1");
    const result = JSON.parse(out.stdout) as { ok: boolean; chains: ChainReport[] };
    assert.equal(result.ok, false);
    assert.deepEqual(
      result.chains[0]!.problems.map((p) => p.replace(/SHA-256 .*$/, "SHA-256 …")),
      [`segment ${gone.seq}: ${gone.key} is missing`, `segment ${flipped.seq}: ${flipped.key} does not match its index entry: SHA-256 …`],
    );
    const text = await fleet.bosun(["backup", "binlog", "verify", "--server", server]);
    assert.match(text.stdout, /BROKEN/);
    const bad = await fleet.bosun(["backup", "binlog", "verify", "--server", "not-a-server"]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--server: expected a server history .*got "not-a-server"/);
  });

  it("a binlog file purged before it was shipped is an alert naming the gap, and the chain shows the break", async () => {
    // Shipped up to the server's position first: the chain ends in that file, whose rotate event (and the file after it) the purge takes unshipped.
    await db.query("INSERT INTO app.events (data) VALUES ('shipped')");
    const shipped = await written();
    await shippedTo(shipped);
    proxy.rule = () => "fail";
    await db.query("FLUSH BINARY LOGS");
    await db.query("INSERT INTO app.events (data) VALUES ('never shipped')");
    await db.query("FLUSH BINARY LOGS");
    const newest = (await written()).File;
    await db.query("PURGE BINARY LOGS TO ?", [newest]);
    proxy.release();
    // The file after it may be named too, or shipped after all when a listing taken during the purge still held it.
    const named = new RegExp(`${shipped.File.replace(".", "\\.")} was purged before it was shipped past offset`);
    const gap = await alert("BINLOG_GAP", 60_000, named);
    assert.match((gap.payload as { message: string }).message, named, "the alert names the purged file the chain ends in");
    await shippedTo(await written(), 60_000);
    const report = await chainReport();
    assert.equal(report.ok, false);
    assert.ok(report.problems.some((p) => new RegExp(`: ${shipped.File.replace(".", "\\.")} was shipped up to \\d+ only, and the next segment is of `).test(p)), `the chain names the break: ${report.problems.join("; ")}`);
  });
});
