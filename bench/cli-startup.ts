/**
 * How long `bosun --version` and `bosun --help` take, beside `node -e 0` on the same Node, in
 * one run: with Node's compile cache cold (the first run on a machine) and warm (every run
 * after); from the sources (bin/bosun) and from the bundle nodes run (npm run bundle). The CLI
 * loads each command's module only when that command runs, and bin/bosun keeps stripped
 * TypeScript in the compile cache. Target: --version under 300 ms (warm).
 *
 *   npx node bench/cli-startup.ts [--quick] [--runs N] [--output PATH] [--check]
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "../build/bundle.ts";
import { benchPeakRssMb, machine, parseBenchArgs, positiveInt, progress, runBenchmark, verdictOf, wallSeconds, type CommonOptions, type Machine, type ReportBase, type Verdict } from "./harness.ts";
import { formatMs, formatRatio, renderTable, round, summarize, type Summary } from "./stats.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const node = join(root, "node_modules", "node", "bin", "node");
const bosun = join(root, "bin", "bosun");
const rssPreload = join(root, "bench", "rss-at-exit.mjs");
const TARGET_MS = 300;

interface Options extends CommonOptions {
  runs: number;
}

interface Row {
  command: string;
  cache: "cold" | "warm" | "-";
  ms: Summary;
  rssMb: number;
  /** p50 against `node -e 0`'s p50. */
  ratio: number;
}

interface Report extends ReportBase {
  machine: Machine;
  runs: number;
  rows: Row[];
  verdict: Verdict;
}

/** Runs a command to its end; its wall time in ms and its peak RSS in MB (reported by the preload). */
async function timed(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<{ ms: number; rssMb: number }> {
  const dir = await mkdtemp(join(tmpdir(), "bosun-bench-rss-"));
  const rssFile = join(dir, "rss");
  try {
    const started = performance.now();
    const code = await new Promise<number | null>((done, fail) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: "ignore", env: { ...env, NODE_OPTIONS: `--import=${rssPreload}`, BOSUN_BENCH_RSS_FILE: rssFile } });
      child.once("error", fail);
      child.once("close", done);
    });
    const ms = performance.now() - started;
    if (code !== 0) throw new Error(`${argv.join(" ")} exited with ${code}`);
    const kib = Math.max(...(await readFile(rssFile, "utf8")).trim().split("\n").map(Number));
    return { ms, rssMb: round(kib / 1024) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function measure(command: string, argv: readonly string[], cache: Row["cache"], runs: number, env: (run: number) => NodeJS.ProcessEnv): Promise<Omit<Row, "ratio">> {
  const ms: number[] = [];
  let rssMb = 0;
  for (let run = 0; run < runs; run++) {
    const sample = await timed(argv, env(run));
    ms.push(sample.ms);
    rssMb = Math.max(rssMb, sample.rssMb);
  }
  progress(`${command} (${cache}): p50 ${formatMs(summarize(ms).p50)}`);
  return { command, cache, ms: summarize(ms), rssMb };
}

async function run(options: Options): Promise<Report> {
  const base = { PATH: process.env["PATH"], HOME: process.env["HOME"] };
  const caches = await mkdtemp(join(tmpdir(), "bosun-bench-cache-"));
  try {
    // Cold: a compile cache nobody has written yet, new for every run. Warm: one cache, filled by a first run.
    const cold = (run: number) => ({ ...base, NODE_COMPILE_CACHE: join(caches, `cold-${run}-${Math.random()}`) });
    const warmDir = join(caches, "warm");
    const warm = () => ({ ...base, NODE_COMPILE_CACHE: warmDir });
    await timed([bosun, "--help"], warm());
    await timed([bosun, "--version"], warm());
    const baseline = await measure("node -e 0", [node, "-e", "0"], "-", options.runs, () => base);
    const rows: Omit<Row, "ratio">[] = [baseline];
    // The bundle, run as the units run it: node, the same flag, bosun.mjs.
    const built = await bundle(join(caches, "dist"));
    const bundled = [node, "--max-semi-space-size=2", built.entry];
    await timed([...bundled, "--help"], warm());
    for (const args of [["--version"], ["--help"]]) {
      rows.push(await measure(`bosun ${args.join(" ")}`, [bosun, ...args], "warm", options.runs, warm));
      rows.push(await measure(`bosun ${args.join(" ")}`, [bosun, ...args], "cold", Math.max(3, Math.round(options.runs / 2)), cold));
      rows.push(await measure(`bundle ${args.join(" ")}`, [...bundled, ...args], "warm", options.runs, warm));
      rows.push(await measure(`bundle ${args.join(" ")}`, [...bundled, ...args], "cold", Math.max(3, Math.round(options.runs / 2)), cold));
    }
    const withRatio = rows.map((r) => ({ ...r, ratio: round(r.ms.p50 / baseline.ms.p50, 2) }));
    const version = withRatio.find((r) => r.command === "bosun --version" && r.cache === "warm")!;
    const misses = version.ms.p50 < TARGET_MS ? [] : [`bosun --version p50 ${formatMs(version.ms.p50)} is not under ${TARGET_MS} ms`];
    return { machine: machine(), runs: options.runs, rows: withRatio, verdict: verdictOf(misses), benchProcessPeakRssMb: benchPeakRssMb(), wallSeconds: wallSeconds() };
  } finally {
    await rm(caches, { recursive: true, force: true });
  }
}

function render(report: Report): string {
  return [
    `CLI start-up, ${report.runs} runs each (${report.machine.cpus} cores, Node ${report.machine.node})`,
    renderTable(
      ["command", "compile cache", "p50", "p90", "max", "vs node -e 0", "peak RSS"],
      report.rows.map((r) => [r.command, r.cache, formatMs(r.ms.p50), formatMs(r.ms.p90), formatMs(r.ms.max), formatRatio(r.ratio), `${r.rssMb} MB`]),
    ),
    `target: bosun --version under ${TARGET_MS} ms with a warm cache: ${report.verdict.why}`,
  ].join("\n");
}

process.exitCode = await runBenchmark<Options, Report>(
  {
    parse(argv) {
      const values = parseBenchArgs(argv, { runs: { type: "string" } });
      const quick = values.quick === true;
      return {
        mode: quick ? "quick" : "full",
        output: resolve(values.output ?? join(root, "bench", "results", quick ? "cli-startup-quick.json" : "cli-startup.json")),
        check: values.check === true,
        runs: values.runs ? positiveInt("runs", values.runs, 1000) : quick ? 5 : 20,
      };
    },
    run: (options) => run(options),
    render,
    hosts: "nothing but the timing loop",
    missed: (report) => !report.verdict.met,
    stopping: "the measured commands",
  },
  process.argv.slice(2),
);
