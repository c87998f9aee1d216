/**
 * Releases: what Bosun's way of deploying a site costs and what it buys, each beside a baseline
 * measured in the same run, on real nginx, git and agent processes against the local emulator.
 *
 *   1. Swap under load: nginx serves a ~64 KB page under constant load while the release is
 *      swapped back and forth, through the agent (an `activate` command per swap) and by
 *      ReleaseRoot.activate() in this process, beside the classic two-`mv` swap paced the same.
 *   2. Publish: `bosun release --wait` to 1, 10 and 50 agents, a small site and a 100 MB one of
 *      random bytes, cold (every node's mirror empty) and a one-file change, beside N plain
 *      `git clone --no-local` (cold) or `git pull` (change) run all at once; and one node's git
 *      work step by step.
 *   3. Activation spread: first to last node's swap in one `activate` with 10 and 50 agents,
 *      beside the receipt spread of one raw SNS publish across as many plain SQS consumers.
 *
 *   npx node bench/release.ts            full run (about 7 minutes on 2 cores)
 *   npx node bench/release.ts --quick    1 and 10 agents, fewer swaps and rounds (about 2 minutes)
 *   options: --agents 1,10,50  --spread-agents 10,50  --big-mb N  --agent-swaps N  --tight-swaps N
 *            --rounds N  --output PATH  --check (exit 1 on a missed target)
 *
 * Prints tables and writes the figures to bench/results/release.json (a quick run to
 * release-quick.json). Loads go to 127.0.0.1 only, and stop by themselves after a while.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { TestFleet, type TestProcess } from "../test/helpers/fleet.ts";
import { awaitReconciled, growFleet, pidsOf, releaseWithCli, webAppEnv } from "./agents.ts";
import {
  benchPeakRssMb,
  increasingInts,
  machine,
  parseBenchArgs,
  positiveInt,
  progress,
  runBenchmark,
  verdictOf,
  wallSeconds,
  type Cleanup,
  type Machine,
  type Verdict,
} from "./harness.ts";
import { memoryOf, type Memory } from "./procfs.ts";
import { RawBaseline } from "./raw-baseline.ts";
import { baselines, freeBytes, measureGitCallCost, measureSingleNode, publishRows, publishTarget, publishVerdict, type GitCallCost, type PublishRow, type SingleNodeRow } from "./release-publish.ts";
import { measureSpread, spreadTarget, type SpreadRow } from "./release-spread.ts";
import { measureSwaps, type SwapResult, type SwapRow } from "./release-swap.ts";
import { commitChange, createLargeSite, createSmallSite } from "./sites.ts";
import { formatMs, formatRatio, renderColumns, round, summaryColumns } from "./stats.ts";

const benchDir = dirname(fileURLToPath(import.meta.url));

/** Heartbeats every 30 s stay out of the timings; a long visibility timeout spares long prepares the extensions. */
const fleetSettings = { heartbeatSeconds: 30, visibilityTimeoutSeconds: 30 } as const;
const startBatch = 10;
const gib = 2 ** 30;

function parseOptions(argv: readonly string[]) {
  const values = parseBenchArgs(argv, {
    agents: { type: "string" },
    "spread-agents": { type: "string" },
    "big-mb": { type: "string" },
    "agent-swaps": { type: "string" },
    "tight-swaps": { type: "string" },
    rounds: { type: "string" },
  });
  const quick = values.quick;
  return {
    mode: quick ? ("quick" as const) : ("full" as const),
    publishCounts: values.agents ? increasingInts("agents", values.agents, 100) : quick ? [1, 10] : [1, 10, 50],
    spreadCounts: values["spread-agents"] ? increasingInts("spread-agents", values["spread-agents"], 100) : quick ? [10] : [10, 50],
    bigMb: values["big-mb"] ? positiveInt("big-mb", values["big-mb"], 2000) : 100,
    agentSwaps: values["agent-swaps"] ? positiveInt("agent-swaps", values["agent-swaps"], 100_000) : quick ? 200 : 400,
    tightSwaps: values["tight-swaps"] ? positiveInt("tight-swaps", values["tight-swaps"], 1_000_000) : quick ? 500 : 4000,
    rounds: values.rounds ? positiveInt("rounds", values.rounds, 10_000) : quick ? 20 : 50,
    warmup: 3,
    connections: 8,
    releaseTimeoutSeconds: 1800,
    output: resolve(values.output ?? `${benchDir}/results/${quick ? "release-quick.json" : "release.json"}`),
    check: values.check,
  };
}

type BenchOptions = ReturnType<typeof parseOptions>;

interface MemoryRow extends Memory {
  agents: number;
  after: string;
}

interface Report {
  benchmark: "release";
  mode: BenchOptions["mode"];
  finishedAt: string;
  machine: Machine;
  settings: Omit<BenchOptions, "output" | "check" | "mode"> & { fleet: typeof fleetSettings; percentile: string; cloneParallelism: string };
  targets: { swapFailed: 0; publish: typeof publishTarget; spread: typeof spreadTarget };
  sites: { label: string; files: number; bytes: number }[];
  swap: SwapResult & { targets: { row: string; target: Verdict }[] };
  singleNode: SingleNodeRow[];
  gitCall: GitCallCost;
  publish: PublishRow[];
  skipped: string[];
  spread: SpreadRow[];
  agentMemory: MemoryRow[];
  benchProcessPeakRssMb: number;
  wallSeconds: number;
}

async function runBench(options: BenchOptions, cleanup: Cleanup): Promise<Report> {
  progress(`mode ${options.mode}: publish to ${options.publishCounts.join(", ")} agent(s), spread with ${options.spreadCounts.join(", ")}`);
  const work = await mkdtemp(join(tmpdir(), "bosun-bench-release-"));
  cleanup.add("work directory", () => rm(work, { recursive: true, force: true }));
  progress(`creating a small site and a ${options.bigMb} MB one of random bytes in ${work}`);
  const small = await createSmallSite(join(work, "small-site"));
  const large = await createLargeSite(join(work, "large-site"), options.bigMb);
  const fleet = await TestFleet.start(fleetSettings);
  cleanup.add("agents and emulator", () => fleet.close());
  // `bosun release --wait` releases to the web nodes the coordinator lists.
  await fleet.startCoordinator();
  const aborting = new AbortController();
  cleanup.add("git and prepares under way", async () => aborting.abort());
  const signal = aborting.signal;
  progress(`emulator at ${fleet.emulator.endpoint}, cluster ${fleet.cluster}`);
  const envFor = webAppEnv(fleet, [small.repo.dir, large.repo.dir]);
  const agents: TestProcess[] = [];
  // Once a release is published, agents that start bring themselves to it before they count.
  let published = false;
  const grow = async (count: number) => {
    const before = agents.length;
    if (before >= count) return;
    progress(`starting agents up to ${count}, ${startBatch} at a time${published ? "; each syncs to the desired release" : ""}`);
    await growFleet(fleet, agents, count, startBatch, envFor);
    if (published) await awaitReconciled(agents.slice(before), options.releaseTimeoutSeconds * 1000);
    await fleet.waitForNodes(agents.map((a) => a.name), 60_000);
  };
  const agentMemory: MemoryRow[] = [];
  const sampleAgents = async (after: string) => agentMemory.push({ agents: agents.length, after, ...(await memoryOf(pidsOf(agents))) });

  await grow(1);
  progress(`swap under load: ${options.agentSwaps} swaps through the agent, ${options.tightSwaps} in-process, each beside two-mv swaps at the same pace`);
  const swap = await measureSwaps(
    { fleet, nodeId: agents[0]!.name, site: small, work, signal, cleanup },
    { agentSwaps: options.agentSwaps, tightSwaps: options.tightSwaps, connections: options.connections, maxLoadSeconds: 900 },
  );

  published = true;
  progress("one node's git work, step by step");
  const singleNode = [...(await measureSingleNode(small, work, signal)), ...(await measureSingleNode(large, work, signal))];
  const gitCall = await measureGitCallCost(small, work, 20, signal);

  const raw = await RawBaseline.start(fleet.emulator.endpoint);
  cleanup.add("raw consumers", () => raw.close());
  const publish: PublishRow[] = [];
  const skipped: string[] = [];
  const spread: SpreadRow[] = [];
  const ctx = { fleet, agents, work, signal, cleanup, timeoutSeconds: options.releaseTimeoutSeconds };
  for (const n of [...new Set([...options.publishCounts, ...options.spreadCounts])].sort((a, b) => a - b)) {
    await grow(n);
    let prepared: [string, string] | undefined;
    if (options.publishCounts.includes(n)) {
      // On every node: the mirror and two release trees (the clones come after those are wiped).
      const needed = 3 * n * large.bytes;
      const free = await freeBytes(work);
      if (free < needed) {
        skipped.push(`${large.label} × ${n} agents: ${(free / gib).toFixed(1)} GiB free, ${(needed / gib).toFixed(1)} GiB needed (a mirror and two release trees per node); not run`);
        progress(skipped[skipped.length - 1]!);
      } else publish.push(...(await publishRows(ctx, large, n, false)).rows);
      const smallRows = await publishRows(ctx, small, n, true);
      publish.push(...smallRows.rows);
      prepared = smallRows.prepared;
      await sampleAgents("releases");
    }
    if (options.spreadCounts.includes(n)) {
      if (!prepared) {
        const first = await releaseWithCli(fleet, cleanup, small.repo.dir, n, options.releaseTimeoutSeconds);
        await commitChange(small, `second release for the spread on ${n} node(s)`);
        prepared = [first.result.commit, (await releaseWithCli(fleet, cleanup, small.repo.dir, n, options.releaseTimeoutSeconds)).result.commit];
      }
      progress(`activation spread on ${n} node(s): ${options.warmup} warm-up and ${options.rounds} timed activations, each beside a raw fan-out`);
      spread.push(await measureSpread(fleet, raw, agents.map((a) => a.name), prepared, { rounds: options.rounds, warmup: options.warmup, timeoutMs: 60_000 }));
      await sampleAgents("activations");
    }
  }
  for (const row of publish) {
    const target = publishVerdict(row, small.label);
    if (target) row.target = target;
  }

  const { output: _output, check: _check, mode, ...settings } = options;
  return {
    benchmark: "release",
    mode,
    finishedAt: new Date().toISOString(),
    machine: machine(),
    settings: { ...settings, fleet: fleetSettings, percentile: "nearest rank", cloneParallelism: baselines.parallelism },
    targets: { swapFailed: 0, publish: publishTarget, spread: spreadTarget },
    sites: [small, large].map(({ label, files, bytes }) => ({ label, files, bytes })),
    swap: { ...swap, targets: swap.rows.filter((r) => r.bosun).map((r) => ({ row: r.name, target: swapVerdict(r) })) },
    singleNode,
    gitCall,
    publish,
    skipped,
    spread,
    agentMemory,
    benchProcessPeakRssMb: benchPeakRssMb(),
    wallSeconds: wallSeconds(),
  };
}

function swapVerdict(row: SwapRow): Verdict {
  return verdictOf([...(row.failed > 0 ? [`${row.failed} failed`] : []), ...(row.mixed > 0 ? [`${row.mixed} mixed`] : [])]);
}

/** Milliseconds with the precision a value deserves: renames take microseconds, releases seconds. */
function formatFine(ms: number): string {
  return ms >= 10 ? formatMs(ms) : `${ms.toFixed(3)} ms`;
}

function ratioText(value: number): string {
  return Number.isFinite(value) ? formatRatio(value) : "n/a";
}

function render(report: Report): string {
  const { swap, machine: m } = report;
  const rowByName = new Map(swap.rows.map((r) => [r.name, r]));
  const paired = (r: SwapRow) => rowByName.get(r.pairedWith);
  const swapTable = renderColumns<SwapRow>(
    [
      ["swap path", (r) => r.name],
      ["swaps", (r) => String(r.swaps)],
      ["loop", (r) => formatMs(r.loopSeconds * 1000)],
      ["swap p50", (r) => formatFine(r.swapUs.p50 / 1000)],
      ["swap p99", (r) => formatFine(r.swapUs.p99 / 1000)],
      ["requests", (r) => String(r.requests)],
      ["served", (r) => String(r.served)],
      ["req/s", (r) => String(r.requestsPerSecond)],
      ["failed", (r) => String(r.failed)],
      ["failed/swap", (r) => r.failedPerSwap.toFixed(3)],
      ["mixed/unknown", (r) => String(r.mixed)],
      ["failed vs paired", (r) => (r.bosun ? `${r.failed} vs ${paired(r)?.failed ?? "?"}` : "-")],
      ["req/s ÷ paired", (r) => (r.bosun ? formatRatio(r.requestsPerSecond / (paired(r)?.requestsPerSecond ?? Number.NaN)) : "-")],
      ["target met?", (r) => (r.bosun ? swapVerdict(r).why : "-")],
    ],
    swap.rows,
  );
  const singleTable = renderColumns<SingleNodeRow>(
    [
      ["site", (r) => r.repo],
      ["release", (r) => r.release],
      ["fetch into mirror", (r) => formatMs(r.fetchMs)],
      ["checkout + verify", (r) => formatMs(r.checkoutVerifyMs)],
      ["bosun git total", (r) => formatMs(r.fetchMs + r.checkoutVerifyMs)],
      ["baseline", (r) => r.baseline],
      ["baseline time", (r) => formatMs(r.baselineMs)],
      ["ratio", (r) => formatRatio((r.fetchMs + r.checkoutVerifyMs) / r.baselineMs)],
    ],
    report.singleNode,
  );
  const publishTable = renderColumns<PublishRow>(
    [
      ["agents", (r) => String(r.agents)],
      ["site", (r) => r.repo],
      ["release", (r) => r.release],
      ["bosun release", (r) => formatMs(r.bosunMs)],
      ["N × git at once", (r) => formatMs(r.baselineMs)],
      ["ratio", (r) => formatRatio(r.ratio)],
      ["to last prepared", (r) => formatMs(r.lastPreparedMs)],
      ["then last active", (r) => formatMs(r.lastActiveMs - r.lastPreparedMs)],
      ["then CLI exit", (r) => formatMs(r.bosunMs - r.lastActiveMs)],
      ["prepare/node p50", (r) => formatMs(r.prepareOnNodeMs.p50)],
      ["prepare/node max", (r) => formatMs(r.prepareOnNodeMs.max)],
      ["target met?", (r) => r.target?.why ?? "-"],
    ],
    report.publish,
  );
  const spreadTable = renderColumns<SpreadRow>(
    [
      ["agents", (r) => String(r.agents)],
      ["activations", (r) => String(r.rounds)],
      ...summaryColumns<SpreadRow>("bosun", (r) => r.bosun, ["p50", "p99", "max"]),
      ...summaryColumns<SpreadRow>("raw", (r) => r.raw, ["p50", "p99", "max"]),
      ["ratio p50", (r) => ratioText(r.ratio.p50)],
      ["ratio p99", (r) => ratioText(r.ratio.p99)],
      ["publish→last done p50", (r) => formatMs(r.bosunPublishToLastDoneMs.p50)],
      ["target met?", (r) => r.target.why],
    ],
    report.spread,
  );
  const spreadDetail = renderColumns<SpreadRow>(
    [
      ["agents", (r) => String(r.agents)],
      ...summaryColumns<SpreadRow>("ack spread", (r) => r.breakdown.ackSpreadMs, ["p50", "p99"]),
      ...summaryColumns<SpreadRow>("ack→swap median", (r) => r.breakdown.ackToSwapMedianMs, ["p50"]),
      ...summaryColumns<SpreadRow>("ack→swap slowest", (r) => r.breakdown.ackToSwapMaxMs, ["p50", "p99"]),
    ],
    report.spread,
  );
  const memoryTable = renderColumns<MemoryRow>(
    [
      ["agents", (r) => String(r.agents)],
      ["after", (r) => r.after],
      ["RSS median", (r) => `${r.medianRssMb} MB`],
      ["RSS max", (r) => `${r.maxRssMb} MB`],
      ["peak (VmHWM) max", (r) => `${r.maxPeakRssMb} MB`],
    ],
    report.agentMemory,
  );
  const sites = report.sites.map((s) => `${s.label} site: ${s.files} files, ${round(s.bytes / 2 ** 20, 1)} MiB`).join("; ");
  return [
    "",
    `Releases (${report.mode} run, ${m.cpus} CPUs, ${m.node}). ${sites}. Percentiles are nearest-rank.`,
    "",
    `1. Swap under load: nginx serves a ${Math.round(swap.pageBytes / 1024)} KB page to ${swap.connections} keep-alive connections (a separate load process) while the release`,
    "   is swapped between two prepared trees. Bosun: a fresh symlink renamed over `current`; through the agent each swap is an `activate`",
    "   command and its `done`. Baseline: `mv public_html public_html.old && mv public_html.new public_html` (two fs.rename of directories,",
    "   nginx root at public_html), paced like the Bosun row beside it. swap p50/p99: publish→done, one activate(), the two renames.",
    `   Target: 0 failed and 0 mixed for Bosun. The agent used ${swap.agentMemory.maxRssMb} MB RSS after its swaps.`,
    "",
    swapTable,
    "",
    "2. Publish to all web nodes: `bosun release --app demo --ref main --repo DIR --wait --json`, from spawning it to its exit with every",
    "   node active. cold: every node's deploy root (mirror included) wiped first; incremental: one file changed. Baseline: N `git clone",
    `   --no-local\` (cold) or N \`git pull --ff-only\` (incremental) of the same repository, ${baselines.parallelism}.`,
    "   Phases, from the nodes' own event times: spawn → last node prepared (fetch, checkout, verify) → last node active → CLI exit.",
    `   Target: an incremental release of the small site on ${publishTarget.agents} nodes in under ${publishTarget.incrementalMs / 1000} s.`,
    "",
    publishTable,
    ...(report.skipped.length ? ["", ...report.skipped.map((s) => `skipped: ${s}`)] : []),
    "",
    "   One node's git work in this process, nothing else running (the agent's own fetchCommit and checkoutRelease, which links what the previous release holds unchanged), beside one clone or pull:",
    "",
    singleTable,
    "",
    `   One silent git call (\`${report.gitCall.command}\`, which fetchCommit makes for a commit its mirror holds; ${report.gitCall.calls} calls each):`,
    `   through the agent's git functions p50 ${formatMs(report.gitCall.agentMs.p50)}, the same command by plain execFile p50 ${formatMs(report.gitCall.execFileMs.p50)}.`,
    "",
    "3. Activation spread: first to last node's `swappedAt` in one `activate` sent to the web role, alternating between two prepared",
    "   releases; the command names the moment to swap as `bosun release` does (200 ms + 10 ms a node ahead), so each node waits for it.",
    "   Baseline: first to last receipt (each consumer's clock at receive) of one raw SNS publish across as many plain SQS",
    `   consumer processes, same emulator, rounds taking turns. Target: p99 under ${spreadTarget.p99Ms} ms.`,
    "",
    spreadTable,
    "",
    "   Where the spread comes from, over the same activations: how far apart the nodes signed their acks (they take the command",
    "   in), and each node's time from its ack to its swap (the handler's checks, then the wait for the named moment, then the rename).",
    "",
    spreadDetail,
    "",
    "Memory: agents' resident memory from /proc, after each phase.",
    "",
    memoryTable,
    "",
  ].join("\n");
}

process.exitCode = await runBenchmark(
  {
    parse: parseOptions,
    run: runBench,
    missed: (report) =>
      report.swap.targets.some((t) => !t.target.met) || report.publish.some((r) => r.target && !r.target.met) || report.spread.some((r) => !r.target.met),
    render,
    hosts: "the emulator, the fleet's event watcher and the in-process swaps",
    stopping: "load, nginx, agents, raw consumers and the emulator",
  },
  process.argv.slice(2),
);
