/**
 * What zero-loss mode costs a commit, on one MariaDB primary whose agent ships to S3 (moto):
 * the same commits with the server waiting for the agent's acknowledgement (semi-synchronous,
 * AFTER_SYNC: a commit returns once it is in S3) and without (plain asynchronous commits, the
 * agent still shipping every second), in alternating rounds:
 *
 * - latency: one connection committing one row at a time, p50 and p99;
 * - throughput: --connections connections committing as fast as they can for --seconds.
 *
 *   npx node bench/zero-loss.ts [--quick] [--rounds 3] [--commits 300] [--seconds 10] [--connections 8] [--output PATH]
 */
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { mariadbMissing } from "../test/helpers/mariadb.ts";
import { motoMissing } from "../test/helpers/moto.ts";
import { PitrBench } from "../test/helpers/pitr.ts";
import { benchPeakRssMb, inTurn, machine, parseBenchArgs, positiveInt, progress, runBenchmark, verdictOf, wallSeconds, type Cleanup, type CommonOptions, type Machine, type ReportBase, type Verdict } from "./harness.ts";
import { sampleProcess } from "./procfs.ts";
import { formatRatio, renderTable, round, summarize, type Summary } from "./stats.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));

interface Options extends CommonOptions {
  rounds: number;
  commits: number;
  seconds: number;
  connections: number;
}

interface Side {
  latencyMs: Summary;
  commitsPerSecond: number;
}

interface Report extends ReportBase {
  machine: Machine;
  rounds: number;
  zeroLoss: Side;
  async: Side;
  /** Zero-loss over asynchronous: latency p50 and p99, and throughput. */
  ratios: { p50: number; p99: number; throughput: number };
  /** Commits the server acknowledged through the agent, and those it let go without (a fallback), over the zero-loss rounds. */
  semiSync: { acknowledged: number; withoutAck: number };
  agentPeakRssMb: number;
  verdict: Verdict;
}

async function run(options: Options, cleanup: Cleanup): Promise<Report> {
  const missing = mariadbMissing() ?? motoMissing();
  if (missing) throw new Error(missing);
  const bench = new PitrBench();
  cleanup.add("the fleet, moto and the MariaDB servers", () => bench.close());
  await bench.start({ name: "bench-zero-loss", serverIds: [71, 72], db1: { shipping: { enabled: "auto", zeroLoss: { enabled: true, timeoutMs: 5000 } } }, db2: { shipping: { enabled: "off" } } });
  const { primary, fleet } = bench;
  const agent = fleet.processes.find((p) => p.name === "db-1")!.child.pid!;
  await primary.query("CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, data VARBINARY(200)) ENGINE=InnoDB");
  const counters = async () => {
    const rows = await primary.query<{ Variable_name: string; Value: string }[]>("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%_tx'");
    const get = (name: string) => Number(rows.find((r) => r.Variable_name === name)?.Value ?? 0);
    return { yes: get("Rpl_semi_sync_master_yes_tx"), no: get("Rpl_semi_sync_master_no_tx") };
  };
  // Wait until the agent's acknowledgements flow: a commit the server let go without one would not measure the mode.
  progress("waiting for the agent's replication connection");
  const deadline = Date.now() + 60_000;
  while ((await counters()).yes < 1) {
    if (Date.now() > deadline) throw new Error("the agent never acknowledged a commit");
    await primary.query("INSERT INTO bench.t (data) VALUES ('warm-up')");
  }
  const mode = (on: boolean) => primary.query(`SET GLOBAL rpl_semi_sync_master_enabled = ${on ? "ON" : "OFF"}`);

  const measure = async (on: boolean): Promise<{ latencies: number[]; rate: number }> => {
    await mode(on);
    const c = await primary.connect();
    const latencies: number[] = [];
    try {
      for (let i = 0; i < options.commits; i++) {
        const started = performance.now();
        await c.query("INSERT INTO bench.t (data) VALUES (REPEAT('x', 150))");
        latencies.push(performance.now() - started);
      }
    } finally {
      await c.end();
    }
    let commits = 0;
    const until = performance.now() + options.seconds * 1000;
    await Promise.all(
      Array.from({ length: options.connections }, async () => {
        const conn = await primary.connect();
        try {
          while (performance.now() < until) {
            await conn.query("INSERT INTO bench.t (data) VALUES (REPEAT('x', 150))");
            commits += 1;
          }
        } finally {
          await conn.end();
        }
      }),
    );
    return { latencies, rate: commits / options.seconds };
  };

  const sides = { zeroLoss: { latencies: [] as number[], rates: [] as number[] }, async: { latencies: [] as number[], rates: [] as number[] } };
  let zeroLossCounted = { yes: 0, no: 0 };
  for (let round = 0; round < options.rounds; round++) {
    progress(`round ${round + 1} of ${options.rounds}`);
    await inTurn(
      round,
      async () => {
        const start = await counters();
        const r = await measure(true);
        const end = await counters();
        zeroLossCounted = { yes: zeroLossCounted.yes + end.yes - start.yes, no: zeroLossCounted.no + end.no - start.no };
        sides.zeroLoss.latencies.push(...r.latencies);
        sides.zeroLoss.rates.push(r.rate);
      },
      async () => {
        const r = await measure(false);
        sides.async.latencies.push(...r.latencies);
        sides.async.rates.push(r.rate);
      },
    );
  }
  await mode(true);
  const side = (s: { latencies: number[]; rates: number[] }): Side => ({ latencyMs: summarize([...s.latencies].sort((a, b) => a - b)), commitsPerSecond: round(s.rates.reduce((a, b) => a + b, 0) / s.rates.length) });
  const zeroLoss = side(sides.zeroLoss);
  const plain = side(sides.async);
  const misses: string[] = [];
  if (zeroLossCounted.no > 0) misses.push(`${zeroLossCounted.no} commits went on without an acknowledgement (the timeout passed)`);
  return {
    machine: machine(),
    rounds: options.rounds,
    zeroLoss,
    async: plain,
    ratios: { p50: round(zeroLoss.latencyMs.p50 / plain.latencyMs.p50, 2), p99: round(zeroLoss.latencyMs.p99 / plain.latencyMs.p99, 2), throughput: round(zeroLoss.commitsPerSecond / plain.commitsPerSecond, 2) },
    semiSync: { acknowledged: zeroLossCounted.yes, withoutAck: zeroLossCounted.no },
    agentPeakRssMb: round((await sampleProcess(agent)).hwmKb / 1024),
    verdict: verdictOf(misses),
    benchProcessPeakRssMb: benchPeakRssMb(),
    wallSeconds: wallSeconds(),
  };
}

function render(report: Report): string {
  const row = (name: string, s: Side) => [name, `${round(s.latencyMs.p50, 2)} ms`, `${round(s.latencyMs.p99, 2)} ms`, `${s.commitsPerSecond}/s`];
  return [
    `Commits on one MariaDB primary whose agent ships to moto's S3 (${report.machine.cpus} cores, Node ${report.machine.node}), ${report.rounds} alternating rounds`,
    renderTable(["mode", "latency p50 (1 connection)", "latency p99", "throughput"], [row("zero-loss (returns once in S3)", report.zeroLoss), row("asynchronous", report.async)]),
    `zero-loss against asynchronous: latency p50 ${formatRatio(report.ratios.p50)}, p99 ${formatRatio(report.ratios.p99)}, throughput ${formatRatio(report.ratios.throughput)}`,
    `zero-loss rounds: ${report.semiSync.acknowledged} commits acknowledged by the agent, ${report.semiSync.withoutAck} let go without one; agent peak RSS ${report.agentPeakRssMb} MB`,
    `every zero-loss commit acknowledged: ${report.verdict.why}`,
  ].join("\n");
}

process.exitCode = await runBenchmark<Options, Report>(
  {
    parse(argv) {
      const values = parseBenchArgs(argv, { rounds: { type: "string" }, commits: { type: "string" }, seconds: { type: "string" }, connections: { type: "string" } });
      const quick = values.quick === true;
      return {
        mode: quick ? "quick" : "full",
        output: resolve(values.output ?? join(root, "bench", "results", quick ? "zero-loss-quick.json" : "zero-loss.json")),
        check: values.check === true,
        rounds: values.rounds ? positiveInt("rounds", values.rounds, 100) : quick ? 2 : 3,
        commits: values.commits ? positiveInt("commits", values.commits, 100_000) : quick ? 100 : 300,
        seconds: values.seconds ? positiveInt("seconds", values.seconds, 3600) : quick ? 5 : 10,
        connections: values.connections ? positiveInt("connections", values.connections, 256) : 8,
      };
    },
    run,
    render,
    hosts: "the S3/SQS/SNS emulator and the clients",
    missed: (report) => !report.verdict.met,
    stopping: "the agents, moto and the MariaDB servers",
  },
  process.argv.slice(2),
);
