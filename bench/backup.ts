/**
 * A db node's snapshot and restore, beside the classic way, on one MariaDB server and one S3
 * endpoint in one run, at two database sizes:
 *
 * - backup: `bosun backup now --wait` (the agent streams mariadb-dump through zstd and AES-256-GCM
 *   into a multipart upload) against dump to a file, `zstd` the file, upload the file (lib-storage,
 *   same part size). Target: at least 1.0x the classic throughput, with no local disk used.
 * - the agent's peak resident memory (VmHWM) during each snapshot, a fresh agent for each size.
 *   Target: under 256 MB at both sizes, and flat (the larger within 1.25x of the smaller).
 * - restore (smaller size): `bosun restore --wait` (download, check every object, decrypt,
 *   decompress, load) against loading the same dump file with the `mariadb` client.
 *
 * The classic way does not encrypt; Bosun's path does, so the comparison is against Bosun.
 *
 *   npx node bench/backup.ts [--quick] [--sizes-mb 512,2048] [--output PATH] [--check]
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { Upload } from "@aws-sdk/lib-storage";
import { StateStore, backupKeys } from "@bosun/aws";
import type { BackupManifest, Envelope } from "@bosun/core";
import { TestFleet } from "../test/helpers/fleet.ts";
import { MariaDb, mariadbMissing } from "../test/helpers/mariadb.ts";
import { UsageError, benchPeakRssMb, increasingInts, machine, parseBenchArgs, progress, runBenchmark, verdictOf, wallSeconds, type Cleanup, type CommonOptions, type Machine, type ReportBase, type Verdict } from "./harness.ts";
import { clockTicksPerSecond, sampleProcess } from "./procfs.ts";
import { formatRatio, renderTable, round } from "./stats.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const MEMORY_TARGET_MB = 256;
// The emulator takes parts up to 11 MiB; both paths use the same size.
const PART_MB = 8;
const MB = 2 ** 20;

interface Options extends CommonOptions {
  sizesMb: number[];
}

interface BackupRow {
  /** The dump's size, as the manifest records it. */
  sourceMb: number;
  bosunSeconds: number;
  /** From the manifest: the agent's snapshot alone, without the command's round trip. */
  bosunSnapshotSeconds: number;
  /** CPU time of the agent process (not the dump tool) during the snapshot. */
  agentCpuSeconds: number;
  bosunStoredMb: number;
  /** The agent's largest resident size during the snapshot (sampled every 50 ms). */
  agentPeakRssMb: number;
  /** Bytes the agent process wrote to disk during the snapshot (/proc/PID/io write_bytes). */
  agentDiskWrittenMb: number;
  classicSeconds: number;
  classicStoredMb: number;
  /** The dump file and its compressed copy, on local disk before the upload. */
  classicStagingMb: number;
  /** Bosun's throughput against the classic one (source bytes per second). */
  ratio: number;
}

interface RestoreRow {
  sourceMb: number;
  bosunSeconds: number;
  clientSeconds: number;
  /** The client's time over Bosun's: above 1.0 Bosun is faster. */
  ratio: number;
  agentPeakRssMb: number;
  checksumsEqual: boolean;
}

interface Report extends ReportBase {
  machine: Machine;
  agentIdleRssMb: number;
  /** The agent's VmHWM over the whole run. */
  agentRunPeakRssMb: number;
  backups: BackupRow[];
  restore: RestoreRow;
  verdict: Verdict;
}

/** One table of rows that compress about 3:1, as text-heavy application data does, grown to about `mb` of dump. */
async function growTo(db: MariaDb, mb: number): Promise<void> {
  await db.query("CREATE DATABASE IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.orders (id BIGINT PRIMARY KEY, ref CHAR(64), body TEXT) ENGINE=InnoDB");
  // About 560 bytes of dump per row.
  const wanted = Math.ceil((mb * MB) / 560);
  const [row] = await db.query<{ n: number | null }[]>("SELECT MAX(id) AS n FROM bench.orders");
  let have = Number(row?.n ?? 0);
  while (have < wanted) {
    const upTo = Math.min(wanted, have + 250_000);
    await db.query(
      `INSERT INTO bench.orders SELECT seq, SHA2(seq, 256), CONCAT(SHA2(RAND(), 512), ' ', REPEAT(CONCAT('order ', seq, ' line item '), 16), ' ', MD5(RAND())) FROM bench.seq_${have + 1}_to_${upTo}`,
    );
    have = upTo;
    progress(`  ${have} of ${wanted} rows`);
  }
}

async function ioWrittenBytes(pid: number): Promise<number> {
  const match = /^write_bytes:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/io`, "utf8"));
  if (!match) throw new Error(`no write_bytes in /proc/${pid}/io`);
  return Number(match[1]);
}

/** Runs a command with stdin and stdout as given (files or inherited), to its end; throws on a non-zero exit. */
async function tool(file: string, args: string[], io: { stdin?: string; stdout?: string } = {}): Promise<void> {
  const child = spawn(file, args, { stdio: [io.stdin ? "pipe" : "ignore", io.stdout ? "pipe" : "ignore", "pipe"] });
  const stderr: Buffer[] = [];
  child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk));
  const flows = [
    ...(io.stdin ? [pipeline(createReadStream(io.stdin), child.stdin!)] : []),
    ...(io.stdout ? [pipeline(child.stdout!, createWriteStream(io.stdout))] : []),
  ];
  const [code] = (await once(child, "close")) as [number | null];
  await Promise.all(flows);
  if (code !== 0) throw new Error(`${file} exited with ${code}: ${Buffer.concat(stderr).toString().trim().slice(-500)}`);
}

async function run(options: Options, cleanup: Cleanup): Promise<Report> {
  const missing = mariadbMissing();
  if (missing) throw new Error(missing);
  const fleet = await TestFleet.start();
  cleanup.add("the fleet", () => fleet.close());
  const db = await MariaDb.start({ serverId: 1, name: "bench-db" });
  cleanup.add("the MariaDB server", () => db.destroy());
  const work = await mkdtemp(join(fleet.dir, "classic-"));
  const keyFile = join(fleet.dir, "backup.key");
  await writeFile(keyFile, randomBytes(32).toString("hex"), { mode: 0o600 });
  const bucket = `b-${fleet.cluster}`;
  const store = new StateStore({ clients: fleet.clients }, { bucket });
  const coordinator = await fleet.startCoordinator();
  cleanup.add("the coordinator", () => coordinator.stop());
  const env = {
    BOSUN_DB: JSON.stringify({
      socket: db.socket,
      user: "root",
      dataDir: db.dataDir,
      backup: { kind: "logical", compression: "zstd", encryptionKeyFile: keyFile, partMB: PART_MB },
    }),
  };

  // One agent for the whole run: a stopped agent's last long poll can take a message the next one then waits out.
  const agent = await fleet.startAgent("db-1", ["db"], env);
  cleanup.add("the agent", () => agent.stop());
  await fleet.waitForNodes(["db-1"]);
  const pid = agent.child.pid!;
  const ticks = clockTicksPerSecond();
  const idleRssMb = round((await sampleProcess(pid)).rssKb / 1024);

  /** The agent's largest resident size while `fn` runs, sampled every 50 ms, and its CPU time and disk writes over it. */
  const watched = async <T>(fn: () => Promise<T>): Promise<{ value: T; peakMb: number; cpuSeconds: number; diskMb: number }> => {
    const [writtenBefore, before] = await Promise.all([ioWrittenBytes(pid), sampleProcess(pid)]);
    let peakKb = before.rssKb;
    const timer = setInterval(() => void sampleProcess(pid).then((s) => (peakKb = Math.max(peakKb, s.rssKb)), () => undefined), 50);
    try {
      const value = await fn();
      const [after, written] = await Promise.all([sampleProcess(pid), ioWrittenBytes(pid)]);
      peakKb = Math.max(peakKb, after.rssKb);
      return { value, peakMb: round(peakKb / 1024), cpuSeconds: round((after.cpuTicks - before.cpuTicks) / ticks, 2), diskMb: round((written - writtenBefore) / MB, 2) };
    } finally {
      clearInterval(timer);
    }
  };

  const operation = async (args: string[]) => {
    const started = performance.now();
    const out = await fleet.bosun([...args, "--wait", "--json", "--timeout", "3600"]);
    const seconds = (performance.now() - started) / 1000;
    if (out.code !== 0) throw new Error(`bosun ${args.join(" ")} exited with ${out.code}: ${out.stderr.slice(-1000)} ${out.stdout.slice(-1000)}`);
    const node = (JSON.parse(out.stdout) as { result: { nodes: { result: Record<string, unknown> }[] } }).result.nodes[0]!;
    return { seconds, result: node.result };
  };

  const bosunBackup = async (): Promise<{ seconds: number; snapshot: string; manifest: BackupManifest; peakMb: number; diskMb: number; cpuSeconds: number }> => {
    const { value, peakMb, cpuSeconds, diskMb } = await watched(() => operation(["backup", "now", "--node", "db-1", "--kind", "logical"]));
    const snapshot = String(value.result["snapshot"]);
    const manifest = (await store.get<Envelope>(backupKeys.manifest(snapshot)))!.payload as BackupManifest;
    return { seconds: value.seconds, snapshot, manifest, peakMb, diskMb, cpuSeconds };
  };

  const dumpFile = join(work, "dump.sql");
  const classicBackup = async (): Promise<{ seconds: number; storedMb: number; stagingMb: number }> => {
    await rm(`${dumpFile}.zst`, { force: true });
    const started = performance.now();
    await tool("mariadb-dump", ["--no-defaults", `--socket=${db.socket}`, "--user=root", "--single-transaction", "--master-data=2", "--gtid", "--databases", "bench"], { stdout: dumpFile });
    await tool("zstd", ["-q", "-3", "-T1", dumpFile, "-o", `${dumpFile}.zst`]);
    const upload = new Upload({
      client: fleet.clients.s3,
      params: { Bucket: bucket, Key: `classic/${Date.now()}/dump.sql.zst`, Body: createReadStream(`${dumpFile}.zst`) },
      partSize: PART_MB * MB,
      queueSize: 4,
    });
    await upload.done();
    const seconds = (performance.now() - started) / 1000;
    const [dump, compressed] = await Promise.all([stat(dumpFile), stat(`${dumpFile}.zst`)]);
    return { seconds, storedMb: round(compressed.size / MB), stagingMb: round((dump.size + compressed.size) / MB) };
  };

  const backups: BackupRow[] = [];
  let restore: RestoreRow | undefined;
  for (const [i, sizeMb] of options.sizesMb.entries()) {
    progress(`growing the database to about ${sizeMb} MB of dump`);
    await growTo(db, sizeMb);
    // Alternate which goes first, so neither always runs on a warmer page cache.
    progress(`${sizeMb} MB: Bosun's streamed snapshot and the classic dump, compress, upload`);
    const ours = i % 2 === 0 ? await bosunBackup() : undefined;
    const classic = await classicBackup();
    const bosun = ours ?? (await bosunBackup());
    const sourceMb = round(bosun.manifest.sourceBytes / MB);
    const classicMbps = (await stat(dumpFile)).size / MB / classic.seconds;
    const row: BackupRow = {
      sourceMb,
      bosunSeconds: round(bosun.seconds, 2),
      bosunSnapshotSeconds: round(bosun.manifest.timings.snapshotMs / 1000, 2),
      agentCpuSeconds: bosun.cpuSeconds,
      bosunStoredMb: round(bosun.manifest.objects.reduce((sum, o) => sum + o.bytes, 0) / MB),
      agentPeakRssMb: bosun.peakMb,
      agentDiskWrittenMb: bosun.diskMb,
      classicSeconds: round(classic.seconds, 2),
      classicStoredMb: classic.storedMb,
      classicStagingMb: classic.stagingMb,
      ratio: round(sourceMb / bosun.seconds / classicMbps, 2),
    };
    backups.push(row);
    progress(`  Bosun ${row.bosunSeconds} s (snapshot ${row.bosunSnapshotSeconds} s, agent CPU ${row.agentCpuSeconds} s), classic ${row.classicSeconds} s (${formatRatio(row.ratio)}); agent peak ${row.agentPeakRssMb} MB`);

    if (i === 0) {
      progress(`${sizeMb} MB: bosun restore, and the mariadb client loading the same dump`);
      const expected = await db.checksums();
      const { value: ours, peakMb } = await watched(() => operation(["restore", "--node", "db-1", "--snapshot", bosun.snapshot]));
      const afterBosun = await db.checksums();
      const started = performance.now();
      await tool("mariadb", ["--no-defaults", `--socket=${db.socket}`, "--user=root"], { stdin: dumpFile });
      const clientSeconds = (performance.now() - started) / 1000;
      const afterClient = await db.checksums();
      const same = (a: Record<string, string | null>) => a["bench.orders"] === expected["bench.orders"];
      restore = {
        sourceMb,
        bosunSeconds: round(ours.seconds, 2),
        clientSeconds: round(clientSeconds, 2),
        ratio: round(clientSeconds / ours.seconds, 2),
        agentPeakRssMb: peakMb,
        checksumsEqual: same(afterBosun) && same(afterClient),
      };
      progress(`  Bosun ${restore.bosunSeconds} s, client ${restore.clientSeconds} s (${formatRatio(restore.ratio)})`);
    }
  }
  await rm(work, { recursive: true, force: true });

  const misses: string[] = [];
  for (const row of backups) {
    if (row.ratio < 1) misses.push(`backup of ${row.sourceMb} MB at ${formatRatio(row.ratio)} of the classic throughput`);
    if (row.agentPeakRssMb >= MEMORY_TARGET_MB) misses.push(`agent peak ${row.agentPeakRssMb} MB at ${row.sourceMb} MB`);
  }
  const [small, large] = [backups[0]!, backups.at(-1)!];
  if (large.agentPeakRssMb > small.agentPeakRssMb * 1.25) misses.push(`agent memory grows with size (${small.agentPeakRssMb} → ${large.agentPeakRssMb} MB)`);
  if (!restore!.checksumsEqual) misses.push("a restore did not give back the table's checksum");
  return { machine: machine(), agentIdleRssMb: idleRssMb, agentRunPeakRssMb: round((await sampleProcess(pid)).hwmKb / 1024), backups, restore: restore!, verdict: verdictOf(misses), benchProcessPeakRssMb: benchPeakRssMb(), wallSeconds: wallSeconds() };
}

function render(report: Report): string {
  const r = report.restore;
  return [
    `Snapshots of one MariaDB server to one S3 endpoint (${report.machine.cpus} cores, Node ${report.machine.node}); logical, zstd level 3, ${PART_MB} MiB parts`,
    renderTable(
      ["dump", "Bosun (streamed, encrypted)", "classic (file, zstd, upload)", "throughput ratio", "agent peak RSS", "agent disk writes", "classic staging disk", "stored (Bosun / classic)"],
      report.backups.map((b) => [
        `${b.sourceMb} MB`,
        `${b.bosunSeconds} s (${round(b.sourceMb / b.bosunSeconds)} MB/s)`,
        `${b.classicSeconds} s (${round(b.sourceMb / b.classicSeconds)} MB/s)`,
        formatRatio(b.ratio),
        `${b.agentPeakRssMb} MB`,
        `${b.agentDiskWrittenMb} MB`,
        `${b.classicStagingMb} MB`,
        `${b.bosunStoredMb} / ${b.classicStoredMb} MB`,
      ]),
    ),
    `agent resident memory: ${report.agentIdleRssMb} MB idle before the first snapshot, ${report.agentRunPeakRssMb} MB at most over the run (VmHWM)`,
    `restore of ${r.sourceMb} MB: bosun restore ${r.bosunSeconds} s (download, check, decrypt, decompress, load) vs mariadb client ${r.clientSeconds} s from the dump file: ${formatRatio(r.ratio)}; agent peak ${r.agentPeakRssMb} MB; checksums equal: ${r.checksumsEqual ? "yes" : "NO"}`,
    `targets: backup at least 1.0x the classic throughput, agent under ${MEMORY_TARGET_MB} MB and flat with size: ${report.verdict.why}`,
  ].join("\n");
}

process.exitCode = await runBenchmark<Options, Report>(
  {
    parse(argv) {
      const values = parseBenchArgs(argv, { "sizes-mb": { type: "string" } });
      const quick = values.quick === true;
      const sizes = values["sizes-mb"] ? increasingInts("sizes-mb", values["sizes-mb"], 100_000) : quick ? [64, 256] : [512, 2048];
      if (sizes.length < 2) throw new UsageError("--sizes-mb needs two sizes or more, to show memory does not grow with size");
      return {
        mode: quick ? "quick" : "full",
        output: resolve(values.output ?? join(root, "bench", "results", quick ? "backup-quick.json" : "backup.json")),
        check: values.check === true,
        sizesMb: sizes,
      };
    },
    run,
    render,
    hosts: "the S3/SQS/SNS emulator and the timing loop",
    missed: (report) => !report.verdict.met,
    stopping: "the agent, the coordinator and the MariaDB server",
  },
  process.argv.slice(2),
);
