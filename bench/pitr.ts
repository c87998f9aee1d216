/**
 * The binary-log archive and point-in-time restore, beside the usual ways, in one run on one
 * MariaDB primary and one S3 endpoint (moto):
 *
 * - recovery point under a steady commit load: for sampled commits, the time from the commit's
 *   acknowledgement to the index entry of the segment holding it being readable in S3 (Bosun),
 *   against a cron job that every --cron-seconds runs FLUSH BINARY LOGS and uploads the closed
 *   files, as archiving scripts do (the time until the file holding the commit is uploaded).
 *   Target: Bosun's p99 under 2 s.
 * - upload amplification: every byte the agent PUT under backups/binlog/ (segments and index
 *   entries, retries included), over the binary-log bytes shipped. Target: at most 1.1.
 * - replay: `bosun restore --to latest` of the snapshot taken before the load (the agent's
 *   replay step, from its result) against piping `mariadb-binlog` of the server's own files
 *   into `mariadb` on a second server loaded with the same snapshot; both end with equal tables.
 *
 *   npx node bench/pitr.ts [--quick] [--seconds 60] [--rate 500] [--cron-seconds 30] [--output PATH] [--check]
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { backupKeys, binlogFileNumber } from "@bosun/aws";
import type { BackupManifest, Envelope } from "@bosun/core";
import { MariaDb, mariadbMissing } from "../test/helpers/mariadb.ts";
import { motoMissing } from "../test/helpers/moto.ts";
import { PitrBench } from "../test/helpers/pitr.ts";
import { S3Proxy } from "../test/helpers/s3-proxy.ts";
import { benchPeakRssMb, machine, parseBenchArgs, positiveInt, progress, runBenchmark, verdictOf, wallSeconds, type Cleanup, type CommonOptions, type Machine, type ReportBase, type Verdict } from "./harness.ts";
import { sampleProcess } from "./procfs.ts";
import { formatRatio, renderTable, round, summarize, type Summary } from "./stats.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const P99_TARGET_MS = 2000;
const AMPLIFICATION_TARGET = 1.1;
const CONNECTIONS = 4;

interface Options extends CommonOptions {
  seconds: number;
  rate: number;
  cronSeconds: number;
}

interface Report extends ReportBase {
  machine: Machine;
  load: { seconds: number; targetRate: number; commits: number; achievedRate: number; samples: number };
  recoveryPointMs: { bosun: Summary; cron: Summary; cronSeconds: number; p99Ratio: number };
  amplification: { binlogBytes: number; putBytes: number; ratio: number; segments: number };
  replay: { binlogMb: number; bosunReplaySeconds: number; bosunTotalSeconds: number; baselineSeconds: number; ratio: number; tablesEqual: boolean };
  memory: { shipperIdleRssMb: number; shipperPeakRssMb: number; restorePeakRssMb: number };
  verdict: Verdict;
}

interface Sample {
  at: number;
  file: string;
  position: number;
}

async function run(options: Options, cleanup: Cleanup): Promise<Report> {
  const missing = mariadbMissing() ?? motoMissing();
  if (missing) throw new Error(missing);
  const bench = new PitrBench();
  cleanup.add("the fleet, moto and the MariaDB servers", () => bench.close());
  // The primary's agent reaches S3 through a proxy that counts what it PUTs.
  let proxy: S3Proxy | undefined;
  await bench.start({
    name: "bench-pitr",
    serverIds: [51, 52],
    db1: { shipping: { enabled: "auto" } },
    db2: { shipping: { enabled: "off" } },
    beforeAgents: async (moto) => {
      proxy = await S3Proxy.start(moto.endpoint);
      cleanup.add("the S3 proxy", () => proxy!.close());
      return { db1: { AWS_ENDPOINT_URL_S3: proxy.endpoint } };
    },
  });
  const { fleet, primary, target, bucket } = bench;
  const shipper = fleet.processes.find((p) => p.name === "db-1")!.child.pid!;
  const restorer = fleet.processes.find((p) => p.name === "db-2")!.child.pid!;
  await primary.query("CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, data VARBINARY(200)) ENGINE=InnoDB");
  progress("a snapshot before the load");
  const backup = await fleet.bosun(["backup", "now", "--node", "db-1", "--wait", "--json", "--timeout", "600"]);
  if (backup.code !== 0) throw new Error(`bosun backup now failed: ${backup.stderr}`);
  const snapshot = (JSON.parse(backup.stdout) as { result: { nodes: { result: { snapshot: string } }[] } }).result.nodes[0]!.result.snapshot;
  const server = await bench.history("db-1");
  const shipperIdleRssMb = round((await sampleProcess(shipper)).rssKb / 1024);

  // Bosun's side: the index, polled every 50 ms; each new entry's end and when it was first seen.
  const covered: { file: string; end: number; seenAt: number }[] = [];
  let watching = true;
  const watcher = (async () => {
    let known = 0;
    while (watching) {
      const index = await bench.index(server).catch(() => []);
      for (const s of index.slice(known)) covered.push({ file: s.file, end: s.end, seenAt: performance.now() });
      known = Math.max(known, index.length);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const bosunCovers = (s: Sample) => covered.find((c) => binlogFileNumber(c.file) > binlogFileNumber(s.file) || (c.file === s.file && c.end >= s.position))?.seenAt;

  // The cron job's side: FLUSH BINARY LOGS, then upload each closed file not uploaded yet.
  const uploadedAt = new Map<string, number>();
  const cronSync = async () => {
    await primary.query("FLUSH BINARY LOGS");
    const files = (await primary.query<{ Log_name: string }[]>("SHOW BINARY LOGS")).map((r) => r.Log_name);
    for (const file of files.slice(0, -1)) {
      if (uploadedAt.has(file)) continue;
      const body = await readFile(join(primary.dataDir, file));
      await fleet.clients.s3.send(new PutObjectCommand({ Bucket: bucket, Key: `cron-archive/${file}`, Body: body }));
      uploadedAt.set(file, performance.now());
    }
  };

  let cronRunning = true;
  const cron = (async () => {
    while (cronRunning) {
      await new Promise((r) => setTimeout(r, options.cronSeconds * 1000));
      await cronSync();
    }
  })();
  progress(`load: ${options.rate} commits/s for ${options.seconds} s on ${CONNECTIONS} connections; cron sync every ${options.cronSeconds} s`);
  const samples: Sample[] = [];
  let commits = 0;
  const loadStarted = performance.now();
  const every = Math.max(1, Math.round(options.rate / 20));
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, worker) => {
      const c = await primary.connect();
      try {
        const interval = (1000 * CONNECTIONS) / options.rate;
        for (let i = 0; ; i++) {
          const due = loadStarted + worker * (interval / CONNECTIONS) + i * interval;
          if (due - loadStarted > options.seconds * 1000) break;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          await c.query("INSERT INTO bench.t (data) VALUES (REPEAT('x', 150))");
          const at = performance.now();
          commits += 1;
          if (commits % every === 0) {
            const [[status]] = (await c.query("SHOW MASTER STATUS")) as unknown as [[{ File: string; Position: number }]];
            samples.push({ at, file: status.File, position: Number(status.Position) });
          }
        }
      } finally {
        await c.end();
      }
    }),
  );
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  progress(`${commits} commits in ${round(loadSeconds)} s; waiting until both archives hold them`);
  await bench.shippedTo(server, primary, undefined, 120_000);
  cronRunning = false;
  await cron;
  await cronSync();
  const deadline = performance.now() + 60_000;
  while (samples.some((s) => bosunCovers(s) === undefined) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  watching = false;
  await watcher;
  if (samples.some((s) => bosunCovers(s) === undefined)) throw new Error("the index watcher never saw some sampled commits covered");
  const shipperPeakRssMb = round((await sampleProcess(shipper)).hwmKb / 1024);

  const bosunMs = samples.map((s) => bosunCovers(s)! - s.at).sort((a, b) => a - b);
  const cronMs = samples.map((s) => uploadedAt.get(s.file)! - s.at).sort((a, b) => a - b);
  const index = await bench.index(server);
  const binlogBytes = index.reduce((sum, s) => sum + s.bytes, 0);
  const putBytes = proxy!.seen.filter((r) => r.method === "PUT" && r.action === "pass" && r.url.includes("/backups/binlog/")).reduce((sum, r) => sum + r.bytes, 0);

  progress("replay: bosun restore --to latest onto a fresh server");
  const started = performance.now();
  const out = await fleet.bosun(["restore", "--node", "db-2", "--snapshot", snapshot, "--to", "latest", "--wait", "--json", "--timeout", "3600"]);
  const bosunTotalSeconds = (performance.now() - started) / 1000;
  if (out.code !== 0) throw new Error(`bosun restore --to latest failed: ${out.stderr} ${out.stdout.slice(-2000)}`);
  const result = (JSON.parse(out.stdout) as { result: { nodes: { result: { replayMs: number; binlogBytes: number } }[] } }).result.nodes[0]!.result;
  const restorePeakRssMb = round((await sampleProcess(restorer)).hwmKb / 1024);

  progress("replay baseline: the same snapshot into a third server, then mariadb-binlog of the server's own files | mariadb");
  const third = await MariaDb.start({ serverId: 53, name: "bench-pitr-baseline" });
  cleanup.add("the baseline server", () => third.destroy());
  const manifest = (await bench.store.get<Envelope>(backupKeys.manifest(snapshot)))!.payload as BackupManifest;
  const dump = await fleet.clients.s3.send(new GetObjectCommand({ Bucket: bucket, Key: manifest.objects[0]!.key }));
  const dumpBytes = Buffer.from(await dump.Body!.transformToByteArray());
  await pipe(["zstd", "-d", "-q", "-c"], ["mariadb", "--no-defaults", `--socket=${third.socket}`, "--user=root"], dumpBytes);
  const files = (await primary.query<{ Log_name: string }[]>("SHOW BINARY LOGS")).map((r) => join(primary.dataDir, r.Log_name)).filter((f) => binlogFileNumber(f) >= binlogFileNumber(manifest.coordinates.file));
  const baselineStarted = performance.now();
  await pipe(["mariadb-binlog", "--no-defaults", `--start-position=${manifest.coordinates.position}`, ...files], ["mariadb", "--no-defaults", `--socket=${third.socket}`, "--user=root", "--binary-mode"]);
  const baselineSeconds = (performance.now() - baselineStarted) / 1000;
  const [ours, theirs] = await Promise.all([target.checksums(), third.checksums()]);
  const tablesEqual = JSON.stringify(ours["bench.t"]) === JSON.stringify(theirs["bench.t"]) && ours["bench.t"] !== undefined;

  const bosun = summarize(bosunMs);
  const cronSummary = summarize(cronMs);
  const bosunReplaySeconds = result.replayMs / 1000;
  const misses: string[] = [];
  if (bosun.p99 >= P99_TARGET_MS) misses.push(`recovery point p99 ${round(bosun.p99)} ms`);
  if (putBytes / binlogBytes > AMPLIFICATION_TARGET) misses.push(`amplification ${round(putBytes / binlogBytes, 3)}`);
  if (!tablesEqual) misses.push("the replayed tables differ");
  return {
    machine: machine(),
    load: { seconds: round(loadSeconds), targetRate: options.rate, commits, achievedRate: round(commits / loadSeconds), samples: samples.length },
    recoveryPointMs: { bosun, cron: cronSummary, cronSeconds: options.cronSeconds, p99Ratio: round(cronSummary.p99 / bosun.p99) },
    amplification: { binlogBytes, putBytes, ratio: round(putBytes / binlogBytes, 3), segments: index.length },
    replay: { binlogMb: round(result.binlogBytes / 2 ** 20, 2), bosunReplaySeconds: round(bosunReplaySeconds, 2), bosunTotalSeconds: round(bosunTotalSeconds, 2), baselineSeconds: round(baselineSeconds, 2), ratio: round(baselineSeconds / bosunReplaySeconds, 2), tablesEqual },
    memory: { shipperIdleRssMb, shipperPeakRssMb, restorePeakRssMb },
    verdict: verdictOf(misses),
    benchProcessPeakRssMb: benchPeakRssMb(),
    wallSeconds: wallSeconds(),
  };
}

/** `a | b`, with `input` into a when given; rejects naming the tool that failed. */
async function pipe(a: string[], b: string[], input?: Buffer): Promise<void> {
  const first = spawn(a[0]!, a.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
  const second = spawn(b[0]!, b.slice(1), { stdio: ["pipe", "ignore", "inherit"] });
  first.stdout.pipe(second.stdin);
  first.stdin.end(input);
  const [[codeA], [codeB]] = await Promise.all([once(first, "close"), once(second, "close")]);
  if (codeA !== 0 || codeB !== 0) throw new Error(`${a[0]} exited with ${codeA}, ${b[0]} with ${codeB}`);
}

function render(report: Report): string {
  const r = report.recoveryPointMs;
  const p = report.replay;
  return [
    `Binary-log archive on one MariaDB primary and moto's S3 (${report.machine.cpus} cores, Node ${report.machine.node}): ${report.load.commits} commits at ${report.load.achievedRate}/s (asked ${report.load.targetRate}/s) for ${report.load.seconds} s, ${report.load.samples} sampled`,
    renderTable(
      ["commit → durable in S3", "p50", "p90", "p99", "max"],
      [
        ["Bosun (segments every second)", `${round(r.bosun.p50)} ms`, `${round(r.bosun.p90)} ms`, `${round(r.bosun.p99)} ms`, `${round(r.bosun.max)} ms`],
        [`cron: FLUSH + upload closed files every ${r.cronSeconds} s`, `${round(r.cron.p50)} ms`, `${round(r.cron.p90)} ms`, `${round(r.cron.p99)} ms`, `${round(r.cron.max)} ms`],
      ],
    ),
    `recovery point p99: cron ${formatRatio(r.p99Ratio)} Bosun's`,
    `upload amplification: ${report.amplification.putBytes} B PUT for ${report.amplification.binlogBytes} B of binary log in ${report.amplification.segments} segments: ${report.amplification.ratio}x`,
    `replay of ${p.binlogMb} MB: Bosun's replay step ${p.bosunReplaySeconds} s (whole restore --to latest ${p.bosunTotalSeconds} s) vs mariadb-binlog | mariadb ${p.baselineSeconds} s: ${formatRatio(p.ratio)}; tables equal: ${p.tablesEqual ? "yes" : "NO"}`,
    `agent memory: shipper ${report.memory.shipperIdleRssMb} MB idle, ${report.memory.shipperPeakRssMb} MB peak under load; restoring agent peak ${report.memory.restorePeakRssMb} MB`,
    `targets: recovery point p99 under ${P99_TARGET_MS} ms, amplification at most ${AMPLIFICATION_TARGET}: ${report.verdict.why}`,
  ].join("\n");
}

process.exitCode = await runBenchmark<Options, Report>(
  {
    parse(argv) {
      const values = parseBenchArgs(argv, { seconds: { type: "string" }, rate: { type: "string" }, "cron-seconds": { type: "string" } });
      const quick = values.quick === true;
      return {
        mode: quick ? "quick" : "full",
        output: resolve(values.output ?? join(root, "bench", "results", quick ? "pitr-quick.json" : "pitr.json")),
        check: values.check === true,
        seconds: values.seconds ? positiveInt("seconds", values.seconds, 3600) : quick ? 20 : 60,
        rate: values.rate ? positiveInt("rate", values.rate, 20_000) : quick ? 200 : 500,
        cronSeconds: values["cron-seconds"] ? positiveInt("cron-seconds", values["cron-seconds"], 3600) : quick ? 10 : 30,
      };
    },
    run,
    render,
    hosts: "the S3/SQS/SNS emulator, the load and the pollers",
    missed: (report) => !report.verdict.met,
    stopping: "the agents, moto and the MariaDB servers",
  },
  process.argv.slice(2),
);
