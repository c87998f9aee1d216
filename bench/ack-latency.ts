/**
 * Ack latency: publish a command and wait until every agent has acknowledged it, with 1, 10
 * and 50 agent processes, beside the same fan-out done with plain SNS/SQS consumers and the
 * plainest SQS round trip, all on the same emulator endpoint in the same run. Then one idle
 * agent's memory and CPU.
 *
 *   npm run bench                       full run: 1, 10, 50 agents; 100 rounds each; 60 s idle window
 *   npm run bench -- --quick            1 and 10 agents; 10 rounds; 10 s idle window
 *   options: --rounds N  --agents 1,10,50  --idle-seconds S  --output PATH  --check (exit 1 on a missed target)
 *
 * Prints a table and writes the figures to bench/results/ack-latency.json (a quick run to
 * ack-latency-quick.json, so it does not replace the full figures).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setTimeout as delay } from "node:timers/promises";
import type { Envelope } from "@bosun/core";
import { TestFleet, type TestProcess } from "../test/helpers/fleet.ts";
import { RawBaseline, type FanOutRound } from "./raw-baseline.ts";
import { clockTicksPerSecond, sampleProcess, type ProcSample } from "./procfs.ts";
import { formatMs, formatRatio, median, renderTable, round, summarize, type Summary } from "./stats.ts";

const benchDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(benchDir, "..");

const targets = { agents: 50, p99Ms: 1000, ratio: 2, idleRssMb: 90, idleCpuPercent: 1 } as const;
/** Heartbeats every 30 s keep them out of the latency rounds; the idle agent gets the production default. */
const latencyHeartbeatSeconds = 30;
const idleHeartbeatSeconds = 15;

interface BenchOptions {
  mode: "full" | "quick";
  agentCounts: number[];
  rounds: number;
  warmup: number;
  idleSeconds: number;
  settleSeconds: number;
  startBatch: number;
  roundTimeoutMs: number;
  output: string;
  check: boolean;
}

class UsageError extends Error {
  readonly code = "BENCH_USAGE";
}

function positiveInt(option: string, text: string, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new UsageError(`--${option} must be a whole number from 1 to ${max}, received ${JSON.stringify(text)}`);
  }
  return value;
}

function parseOptions(argv: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: "boolean", default: false },
      rounds: { type: "string" },
      agents: { type: "string" },
      "idle-seconds": { type: "string" },
      output: { type: "string" },
      check: { type: "boolean", default: false },
    },
    strict: true,
  });
  const quick = values.quick;
  const agentCounts = values.agents
    ? values.agents.split(",").map((part) => positiveInt("agents", part.trim(), 200))
    : quick
      ? [1, 10]
      : [1, 10, 50];
  if (agentCounts.some((n, i) => i > 0 && n <= agentCounts[i - 1]!)) {
    throw new UsageError(`--agents must be increasing (agents are added between rows), received ${JSON.stringify(values.agents)}`);
  }
  return {
    mode: quick ? "quick" : "full",
    agentCounts,
    rounds: values.rounds ? positiveInt("rounds", values.rounds, 10_000) : quick ? 10 : 100,
    warmup: quick ? 3 : 5,
    idleSeconds: values["idle-seconds"] ? positiveInt("idle-seconds", values["idle-seconds"], 3600) : quick ? 10 : 60,
    settleSeconds: quick ? 3 : 10,
    startBatch: 10,
    roundTimeoutMs: 30_000,
    output: resolve(values.output ?? `${benchDir}/results/${quick ? "ack-latency-quick.json" : "ack-latency.json"}`),
    check: values.check,
  };
}

const began = performance.now();
function progress(text: string): void {
  process.stderr.write(`[${((performance.now() - began) / 1000).toFixed(1).padStart(6)} s] ${text}\n`);
}

/** One timed Bosun round, and where the slowest agent's time went. */
interface AckRound {
  latencyMs: number;
  /** Publish until the slowest agent signed its ack (wall clock, 1 ms resolution). */
  inboundMs: number;
  /** From the ack's signing until the fleet's watcher had verified it. */
  outboundMs: number;
}

/**
 * Publishes a probe to the web role and times it until the last agent's ack has reached the
 * fleet's event watcher; then waits (untimed) for every `done`, so the next round starts quiet.
 */
async function bosunRound(fleet: TestFleet, nodeIds: readonly string[], timeoutMs: number): Promise<AckRound> {
  const command = fleet.command("probe", {}, { roles: ["web"] });
  // Waiters go in before publishing, so each ack is timed as it arrives.
  const acks = nodeIds.map((id) =>
    fleet.waitForNodeEvent(command.id, id, "ack", timeoutMs).then((event: Envelope) => ({ event, at: performance.now(), wallAt: Date.now() })),
  );
  const publishedWall = Date.now();
  const started = performance.now();
  await fleet.publish(command);
  const arrived = await Promise.all(acks);
  const last = arrived.reduce((a, b) => (b.at > a.at ? b : a));
  await Promise.all(nodeIds.map((id) => fleet.waitForNodeEvent(command.id, id, "done", timeoutMs)));
  const signedAt = Date.parse(last.event.issuedAt);
  return { latencyMs: last.at - started, inboundMs: signedAt - publishedWall, outboundMs: last.wallAt - signedAt };
}

async function growFleet(fleet: TestFleet, agents: TestProcess[], count: number, batchSize: number): Promise<void> {
  while (agents.length < count) {
    const first = agents.length + 1;
    const ids = Array.from({ length: Math.min(batchSize, count - agents.length) }, (_, i) => `web-${String(first + i).padStart(2, "0")}`);
    agents.push(...(await Promise.all(ids.map((id) => fleet.startAgent(id, ["web"])))));
  }
}

interface Verdict {
  met: boolean;
  why: string;
}

interface Run {
  agents: number;
  bosun: Summary;
  rawFanOut: Summary;
  rawSqsRoundTrip: Summary;
  ratio: { p50: number; p99: number };
  /** Medians over rounds of where the slowest responder's time went. */
  breakdown: {
    bosunPublishToAckSignedMs: number;
    bosunAckSignedToWatcherMs: number;
    rawPublishToReceivedMs: number;
    rawReceivedToCollectorMs: number;
  };
  /** CPU time (user + system) each agent / raw consumer process spent per timed round, from /proc. */
  cpuPerRoundMs: { agent: number; rawConsumer: number; benchProcessDuringBosunRound: number; benchProcessDuringRawRound: number };
  target: Verdict;
  samplesMs: { bosun: number[]; rawFanOut: number[]; rawSqsRoundTrip: number[] };
}

function verdict(bosun: Summary, ratio: { p50: number; p99: number }): Verdict {
  const misses: string[] = [];
  if (bosun.p99 >= targets.p99Ms) misses.push(`p99 ${formatMs(bosun.p99)} >= 1 s`);
  if (ratio.p50 >= targets.ratio) misses.push(`ratio p50 ${formatRatio(ratio.p50)} >= 2x`);
  if (ratio.p99 >= targets.ratio) misses.push(`ratio p99 ${formatRatio(ratio.p99)} >= 2x`);
  return { met: misses.length === 0, why: misses.length === 0 ? "yes" : `no: ${misses.join(", ")}` };
}

/** CPU time of this process while `run` runs, in ms; this process hosts the emulator, so that is mostly its work. */
async function metered<T>(run: () => Promise<T>): Promise<{ value: T; cpuMs: number }> {
  const before = process.cpuUsage();
  const value = await run();
  const used = process.cpuUsage(before);
  return { value, cpuMs: (used.user + used.system) / 1000 };
}

/** One Bosun round and one raw fan-out, in alternating order so neither always follows the other's tail; then a raw SQS round trip. */
async function pairedRound(fleet: TestFleet, raw: RawBaseline, nodeIds: readonly string[], i: number, timeoutMs: number) {
  const b = () => metered(() => bosunRound(fleet, nodeIds, timeoutMs));
  const r = () => metered(() => raw.fanOut(timeoutMs));
  let ack: { value: AckRound; cpuMs: number };
  let fanOut: { value: FanOutRound; cpuMs: number };
  if (i % 2 === 0) {
    ack = await b();
    fanOut = await r();
  } else {
    fanOut = await r();
    ack = await b();
  }
  return { ackRound: ack.value, fanOutRound: fanOut.value, cpu: { bosun: ack.cpuMs, raw: fanOut.cpuMs }, sqsRoundTrip: await raw.sqsRoundTrip() };
}

async function measureCount(fleet: TestFleet, raw: RawBaseline, agents: TestProcess[], count: number, options: BenchOptions): Promise<Run> {
  progress(`starting agents and raw consumers up to ${count}`);
  await growFleet(fleet, agents, count, options.startBatch);
  await raw.growTo(count, options.startBatch);
  const nodeIds = agents.map((a) => a.name);
  progress(`${count} agent(s) running; ${options.warmup} warm-up and ${options.rounds} timed rounds`);
  const bosun: AckRound[] = [];
  const fanOut: FanOutRound[] = [];
  const sqs: number[] = [];
  for (let i = 0; i < options.warmup; i++) await pairedRound(fleet, raw, nodeIds, i, options.roundTimeoutMs);
  const agentPids = agents.flatMap((a) => (a.child.pid === undefined ? [] : [a.child.pid]));
  const benchCpu = { bosun: 0, raw: 0 };
  const cpuBefore = { agents: await cpuTicks(agentPids), raw: await cpuTicks(raw.pids) };
  for (let i = 0; i < options.rounds; i++) {
    const { ackRound, fanOutRound, cpu, sqsRoundTrip } = await pairedRound(fleet, raw, nodeIds, i, options.roundTimeoutMs);
    benchCpu.bosun += cpu.bosun;
    benchCpu.raw += cpu.raw;
    bosun.push(ackRound);
    fanOut.push(fanOutRound);
    sqs.push(sqsRoundTrip);
  }
  // CPU per process per round: on 2 cores, N of these run at once, so this bounds the fan-out.
  const perRound = (before: number, after: number, processes: number) =>
    round((((after - before) / clockTicksPerSecond()) * 1000) / processes / options.rounds, 2);
  const cpuPerRoundMs = {
    agent: perRound(cpuBefore.agents, await cpuTicks(agentPids), agentPids.length),
    rawConsumer: perRound(cpuBefore.raw, await cpuTicks(raw.pids), raw.pids.length),
    benchProcessDuringBosunRound: round(benchCpu.bosun / options.rounds, 2),
    benchProcessDuringRawRound: round(benchCpu.raw / options.rounds, 2),
  };
  const bosunSummary = summarize(bosun.map((r) => r.latencyMs));
  const rawSummary = summarize(fanOut.map((r) => r.latencyMs));
  const ratio = { p50: round(bosunSummary.p50 / rawSummary.p50, 2), p99: round(bosunSummary.p99 / rawSummary.p99, 2) };
  const run: Run = {
    agents: count,
    bosun: bosunSummary,
    rawFanOut: rawSummary,
    rawSqsRoundTrip: summarize(sqs),
    ratio,
    breakdown: {
      bosunPublishToAckSignedMs: median(bosun.map((r) => r.inboundMs)),
      bosunAckSignedToWatcherMs: median(bosun.map((r) => r.outboundMs)),
      rawPublishToReceivedMs: median(fanOut.map((r) => r.inboundMs)),
      rawReceivedToCollectorMs: median(fanOut.map((r) => r.outboundMs)),
    },
    cpuPerRoundMs,
    target: verdict(bosunSummary, ratio),
    samplesMs: { bosun: bosun.map((r) => round(r.latencyMs)), rawFanOut: fanOut.map((r) => round(r.latencyMs)), rawSqsRoundTrip: sqs.map((v) => round(v)) },
  };
  progress(
    `${count} agent(s): bosun p50 ${formatMs(bosunSummary.p50)} p99 ${formatMs(bosunSummary.p99)}; ` +
      `raw fan-out p50 ${formatMs(rawSummary.p50)} p99 ${formatMs(rawSummary.p99)}; ratio ${formatRatio(ratio.p50)} / ${formatRatio(ratio.p99)}`,
  );
  return run;
}

async function cpuTicks(pids: readonly number[]): Promise<number> {
  const samples = await Promise.all(pids.map((pid) => sampleProcess(pid)));
  return samples.reduce((sum, s) => sum + s.cpuTicks, 0);
}

interface AgentMemory {
  agents: number;
  medianRssMb: number;
  maxRssMb: number;
}

async function agentMemory(agents: readonly TestProcess[]): Promise<AgentMemory> {
  const samples = await Promise.all(agents.flatMap((a) => (a.child.pid === undefined ? [] : [sampleProcess(a.child.pid)])));
  const rss = samples.map((s) => s.rssKb / 1024);
  return { agents: samples.length, medianRssMb: median(rss), maxRssMb: round(Math.max(...rss)) };
}

interface IdleResult {
  windowSeconds: number;
  heartbeatSeconds: number;
  rssMb: number;
  maxRssMb: number;
  peakRssMb: number;
  cpuPercent: number;
  rssTarget: Verdict;
  cpuTarget: Verdict;
}

/** One agent, warmed by a command, left alone; RSS and CPU time read from /proc across the window. */
async function measureIdle(fleet: TestFleet, options: BenchOptions): Promise<IdleResult> {
  const agent = await fleet.startAgent("idle-1", ["web"], { BOSUN_HEARTBEAT_INTERVAL: String(idleHeartbeatSeconds) });
  const pid = agent.child.pid;
  if (pid === undefined) throw new Error("the idle agent has no pid");
  const warm = fleet.command("probe", {}, { nodes: ["idle-1"] });
  await fleet.publish(warm);
  await fleet.waitForNodeEvent(warm.id, "idle-1", "done", options.roundTimeoutMs);
  progress(`idle agent pid ${pid} handled one command; settling ${options.settleSeconds} s, then measuring for ${options.idleSeconds} s`);
  await delay(options.settleSeconds * 1000);
  const samples: ProcSample[] = [await sampleProcess(pid)];
  const end = samples[0]!.at + options.idleSeconds * 1000;
  while (performance.now() < end) {
    await delay(Math.min(1000, Math.max(0, end - performance.now())));
    samples.push(await sampleProcess(pid));
  }
  const first = samples[0]!;
  const last = samples[samples.length - 1]!;
  const cpuSeconds = (last.cpuTicks - first.cpuTicks) / clockTicksPerSecond();
  const cpuPercent = round((cpuSeconds / ((last.at - first.at) / 1000)) * 100, 2);
  const maxRssMb = round(Math.max(...samples.map((s) => s.rssKb)) / 1024);
  return {
    windowSeconds: round((last.at - first.at) / 1000),
    heartbeatSeconds: idleHeartbeatSeconds,
    rssMb: round(last.rssKb / 1024),
    maxRssMb,
    peakRssMb: round(last.hwmKb / 1024),
    cpuPercent,
    rssTarget: maxRssMb < targets.idleRssMb ? { met: true, why: "yes" } : { met: false, why: `no: ${maxRssMb} MB >= ${targets.idleRssMb} MB` },
    cpuTarget: cpuPercent < targets.idleCpuPercent ? { met: true, why: "yes" } : { met: false, why: `no: ${cpuPercent}% >= ${targets.idleCpuPercent}%` },
  };
}

interface Report {
  benchmark: "ack-latency";
  mode: BenchOptions["mode"];
  finishedAt: string;
  machine: { cpus: number; cpuModel: string; totalMemoryMb: number; node: string; platform: string };
  settings: { rounds: number; warmup: number; agentCounts: number[]; idleSeconds: number; latencyHeartbeatSeconds: number; percentile: string };
  targets: typeof targets;
  runs: Run[];
  agentMemoryAfterLatencyRuns: AgentMemory;
  idleAgent: IdleResult;
  benchProcessPeakRssMb: number;
  wallSeconds: number;
}

async function runBench(options: BenchOptions, held: Held): Promise<Report> {
  progress(`mode ${options.mode}: agents ${options.agentCounts.join(", ")}; ${options.rounds} rounds after ${options.warmup} warm-up`);
  const fleet = await TestFleet.start({ heartbeatSeconds: latencyHeartbeatSeconds });
  held.fleet = fleet;
  progress(`emulator at ${fleet.emulator.endpoint}, cluster ${fleet.cluster}`);
  const raw = await RawBaseline.start(fleet.emulator.endpoint);
  held.raw = raw;

  const agents: TestProcess[] = [];
  const runs: Run[] = [];
  for (const count of options.agentCounts) runs.push(await measureCount(fleet, raw, agents, count, options));
  const memory = await agentMemory(agents);

  progress("stopping the latency agents and raw consumers");
  await Promise.all(agents.map((a) => a.stop(15_000)));
  await raw.stopConsumers();
  const idle = await measureIdle(fleet, options);

  const cpu = cpus();
  return {
    benchmark: "ack-latency",
    mode: options.mode,
    finishedAt: new Date().toISOString(),
    machine: {
      cpus: cpu.length,
      cpuModel: cpu[0]?.model.trim() ?? "unknown",
      totalMemoryMb: Math.round(totalmem() / 2 ** 20),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
    },
    settings: {
      rounds: options.rounds,
      warmup: options.warmup,
      agentCounts: options.agentCounts,
      idleSeconds: options.idleSeconds,
      latencyHeartbeatSeconds,
      percentile: "nearest rank",
    },
    targets,
    runs,
    agentMemoryAfterLatencyRuns: memory,
    idleAgent: idle,
    benchProcessPeakRssMb: round(process.resourceUsage().maxRSS / 1024),
    wallSeconds: round((performance.now() - began) / 1000),
  };
}

function render(report: Report, output: string): string {
  const header = ["agents", "bosun p50", "bosun p99", "raw fan-out p50", "raw fan-out p99", "ratio p50", "ratio p99", "target met?"];
  const rows = report.runs.map((r) => [
    String(r.agents),
    formatMs(r.bosun.p50),
    formatMs(r.bosun.p99),
    formatMs(r.rawFanOut.p50),
    formatMs(r.rawFanOut.p99),
    formatRatio(r.ratio.p50),
    formatRatio(r.ratio.p99),
    r.target.why,
  ]);
  const detailHeader = [
    "agents",
    "bosun max",
    "raw fan-out max",
    "raw SQS p50",
    "raw SQS p99",
    "bosun publish→ack signed",
    "ack signed→watcher",
    "raw publish→received",
    "received→collector",
    "CPU/round: agent",
    "raw consumer",
    "emulator: bosun",
    "raw",
  ];
  const detail = report.runs.map((r) => [
    String(r.agents),
    formatMs(r.bosun.max),
    formatMs(r.rawFanOut.max),
    formatMs(r.rawSqsRoundTrip.p50),
    formatMs(r.rawSqsRoundTrip.p99),
    formatMs(r.breakdown.bosunPublishToAckSignedMs),
    formatMs(r.breakdown.bosunAckSignedToWatcherMs),
    formatMs(r.breakdown.rawPublishToReceivedMs),
    formatMs(r.breakdown.rawReceivedToCollectorMs),
    formatMs(r.cpuPerRoundMs.agent),
    formatMs(r.cpuPerRoundMs.rawConsumer),
    formatMs(r.cpuPerRoundMs.benchProcessDuringBosunRound),
    formatMs(r.cpuPerRoundMs.benchProcessDuringRawRound),
  ]);
  const sqs = report.runs.map((r) => `${r.agents} agent(s): p50 ${formatMs(r.rawSqsRoundTrip.p50)}, p99 ${formatMs(r.rawSqsRoundTrip.p99)}`).join("; ");
  const idle = report.idleAgent;
  const memory = report.agentMemoryAfterLatencyRuns;
  const { settings, machine } = report;
  const minutes = Math.floor(report.wallSeconds / 60);
  return [
    "",
    `Ack latency (${report.mode} run, ${machine.cpus} CPUs, ${machine.node}): publish a probe until every agent's ack has reached the issuer,`,
    "beside the same fan-out with plain SNS/SQS consumer processes (publish until every reply is read), same emulator, same run.",
    `${settings.rounds} timed rounds per row after ${settings.warmup} warm-up rounds; percentiles are nearest-rank (below 100 rounds p99 is the max).`,
    `Targets: bosun p99 < 1 s (the issue sets it for ${targets.agents} agents; every row is held to it here) and bosun ÷ raw < 2x at p50 and p99.`,
    "",
    renderTable(header, rows),
    "",
    `raw SQS send→receive round trip (one queue, a waiting long poll), measured in each row: ${sqs}`,
    `idle agent RSS: ${idle.rssMb} MB at the end, ${idle.maxRssMb} MB max over the window (VmHWM ${idle.peakRssMb} MB); target < ${targets.idleRssMb} MB: ${idle.rssTarget.why}`,
    `idle agent CPU over ${idle.windowSeconds} s (heartbeat every ${idle.heartbeatSeconds} s, 20 s long polls): ${idle.cpuPercent}%; target < ${targets.idleCpuPercent}%: ${idle.cpuTarget.why}`,
    "",
    "Detail. Breakdown columns: medians over rounds for the slowest responder of each round (wall clock, 1 ms resolution).",
    "CPU/round: user+system CPU each agent or raw consumer process used per timed round (an agent also handles the probe and reports done);",
    "emulator: CPU of this process (the in-process emulator, plus the event watcher or reply collector) during a Bosun / raw round.",
    "",
    renderTable(detailHeader, detail),
    "",
    `agent RSS after the latency rounds (${memory.agents} agents): median ${memory.medianRssMb} MB, max ${memory.maxRssMb} MB`,
    `benchmark process peak RSS (it hosts the emulator and the fleet's event watcher): ${report.benchProcessPeakRssMb} MB`,
    `wall time: ${minutes}m ${(report.wallSeconds - minutes * 60).toFixed(0)}s`,
    `results: ${relative(repoRoot, output)}`,
    "",
  ].join("\n");
}

/** Indented JSON, with each list of samples on one line so the file reads as a report. */
function toJson(report: Report): string {
  const text = JSON.stringify(report, null, 2).replace(/\[\s+([-\d.,\s]+?)\s+\]/g, (_, inner: string) => `[${inner.replace(/,\s+/g, ", ")}]`);
  return `${text}\n`;
}

/** What is running and must be stopped, however the run ends. */
interface Held {
  fleet?: TestFleet;
  raw?: RawBaseline;
}

const held: Held = {};
let interrupted = false;
let closing: Promise<void> | undefined;

/** Stops the raw consumers, then the agents and the emulator. Safe to call twice; every step runs. */
function closeAll(): Promise<void> {
  closing ??= (async () => {
    const errors: unknown[] = [];
    await held.raw?.close().catch((e: unknown) => errors.push(e));
    await held.fleet?.close().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw new AggregateError(errors, "could not stop everything the benchmark started");
  })();
  return closing;
}

function describeError(error: unknown): string {
  if (error instanceof AggregateError) return [error.message, ...error.errors.map((e) => `  ${describeError(e)}`)].join("\n");
  if (error instanceof Error) return error.cause === undefined ? error.message : `${error.message} (cause: ${describeError(error.cause)})`;
  return String(error);
}

async function main(argv: readonly string[]): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseOptions(argv);
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    return 2;
  }
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.once(signal, () => {
      interrupted = true;
      progress(`${signal}: stopping agents, raw consumers and the emulator`);
      closeAll()
        .catch((error: unknown) => process.stderr.write(`${describeError(error)}\n`))
        .finally(() => process.exit(code));
    });
  }
  let report: Report;
  try {
    report = await runBench(options, held);
    await mkdir(dirname(options.output), { recursive: true });
    await writeFile(options.output, toJson(report));
  } catch (error) {
    // After a signal, whatever was under way fails as its processes go; that is not news.
    if (!interrupted) process.stderr.write(`benchmark failed: ${describeError(error)}\n`);
    await closeAll().catch((e: unknown) => process.stderr.write(`${describeError(e)}\n`));
    return 1;
  }
  progress("measurements done; stopping everything");
  try {
    await closeAll();
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    return 1;
  }
  process.stdout.write(render(report, options.output));
  const missed = report.runs.some((r) => !r.target.met) || !report.idleAgent.rssTarget.met || !report.idleAgent.cpuTarget.met;
  return options.check && missed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
