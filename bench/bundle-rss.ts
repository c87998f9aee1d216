/**
 * An idle agent's memory when it runs the bundle nodes install (npm run bundle: dist/bosun.tgz,
 * unpacked as a node unpacks it) beside the same agent run from the .ts sources through Node's
 * type stripping, and beside plain `node` doing nothing. Each agent is a web node on its own
 * emulator, warmed by one command, then left alone with the production heartbeat; RSS is read
 * from /proc every second over the window. Target (issue 12): the bundle's idle agent under 90 MB.
 *
 *   npx node bench/bundle-rss.ts [--quick] [--idle-seconds S] [--output PATH] [--check]
 */
import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as delay } from "node:timers/promises";
import { bundle } from "../build/bundle.ts";
import { NODE_FLAGS } from "../packages/cli/src/children.ts";
import { TestFleet } from "../test/helpers/fleet.ts";
import {
  benchPeakRssMb,
  machine,
  parseBenchArgs,
  positiveInt,
  progress,
  runBenchmark,
  verdictOf,
  wallSeconds,
  type Cleanup,
  type CommonOptions,
  type Machine,
  type ReportBase,
  type Verdict,
} from "./harness.ts";
import { sampleProcess } from "./procfs.ts";
import { renderTable, round } from "./stats.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const TARGET_MB = 90;
/** The production default, as bench/ack-latency.ts's idle agent has. */
const heartbeatSeconds = 15;

interface Options extends CommonOptions {
  idleSeconds: number;
  settleSeconds: number;
}

interface Row {
  what: string;
  /** RSS at the end of the window, and the largest seen in it. */
  rssMb: number;
  maxRssMb: number;
  /** maxRssMb against the source agent's. */
  vsSource: number | undefined;
}

interface Report extends ReportBase {
  machine: Machine;
  windowSeconds: number;
  heartbeatSeconds: number;
  rows: Row[];
  artifact: { javascriptMb: number; tarballMb: number; sha256: string; buildSeconds: number; sha256Ms: number };
  verdict: Verdict;
}

/** The largest and last RSS of each process, read together every second over the window. */
async function sampleTogether(pids: readonly number[], seconds: number): Promise<{ rssMb: number; maxRssMb: number }[]> {
  const max = pids.map(() => 0);
  let last = pids.map(() => 0);
  const end = performance.now() + seconds * 1000;
  for (;;) {
    last = (await Promise.all(pids.map((pid) => sampleProcess(pid)))).map((s) => s.rssKb / 1024);
    last.forEach((mb, i) => (max[i] = Math.max(max[i]!, mb)));
    if (performance.now() >= end) break;
    await delay(Math.min(1000, end - performance.now()));
  }
  return pids.map((_, i) => ({ rssMb: round(last[i]!), maxRssMb: round(max[i]!) }));
}

async function startAgent(fleet: TestFleet, nodeId: string): Promise<number> {
  const agent = await fleet.startAgent(nodeId, ["web"], { BOSUN_HEARTBEAT_INTERVAL: String(heartbeatSeconds) });
  const warm = fleet.command("probe", {}, { nodes: [nodeId] });
  await fleet.publish(warm);
  await fleet.waitForNodeEvent(warm.id, nodeId, "done", 30_000);
  return agent.child.pid!;
}

async function run(options: Options, cleanup: Cleanup): Promise<Report> {
  const work = await mkdtemp(join(tmpdir(), "bosun-bench-bundle-"));
  cleanup.add("the bundle's folder", () => rm(work, { recursive: true, force: true }));
  const building = performance.now();
  const artifact = await bundle(join(work, "dist"));
  const buildSeconds = round((performance.now() - building) / 1000);
  // As a node installs it: the SHA-256 checked by sha256sum, then the tarball unpacked.
  const checking = performance.now();
  execFileSync("sha256sum", ["--check", "--status", "bosun.tgz.sha256"], { cwd: join(work, "dist") });
  const sha256Ms = round(performance.now() - checking);
  execFileSync("tar", ["-xzf", artifact.tarball, "-C", work]);
  const entry = join(work, "package", "bosun.mjs");
  progress(`bundle built in ${buildSeconds} s: ${round(artifact.bytes / 2 ** 20, 2)} MB of JavaScript, tarball ${round(artifact.tarballBytes / 2 ** 20, 2)} MB`);

  const settings = { heartbeatSeconds };
  const sourceFleet = await TestFleet.start(settings);
  cleanup.add("the sources' fleet", () => sourceFleet.close());
  const bundleFleet = await TestFleet.start(settings, { main: entry });
  cleanup.add("the bundle's fleet", () => bundleFleet.close());
  // One after the other, so neither starts while the other compiles.
  const sourcePid = await startAgent(sourceFleet, "source-1");
  const bundlePid = await startAgent(bundleFleet, "bundle-1");
  const baseline = spawn(process.execPath, [...NODE_FLAGS, "-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  cleanup.add("node -e", async () => {
    baseline.kill();
  });
  progress(`agents ready (sources pid ${sourcePid}, bundle pid ${bundlePid}); settling ${options.settleSeconds} s, then measuring for ${options.idleSeconds} s`);
  await delay(options.settleSeconds * 1000);
  const [source, bundled, plain] = await sampleTogether([sourcePid, bundlePid, baseline.pid!], options.idleSeconds);
  const rows: Row[] = [
    { what: "agent, bundle (dist/bosun.tgz)", ...bundled!, vsSource: round(bundled!.maxRssMb / source!.maxRssMb, 2) },
    { what: "agent, .ts sources (bin/bosun)", ...source!, vsSource: 1 },
    { what: `node ${NODE_FLAGS.join(" ")} -e 'setInterval(...)'`, ...plain!, vsSource: round(plain!.maxRssMb / source!.maxRssMb, 2) },
  ];
  return {
    machine: machine(),
    windowSeconds: options.idleSeconds,
    heartbeatSeconds,
    rows,
    artifact: {
      javascriptMb: round(artifact.bytes / 2 ** 20, 2),
      tarballMb: round(artifact.tarballBytes / 2 ** 20, 2),
      sha256: artifact.sha256,
      buildSeconds,
      sha256Ms,
    },
    verdict: verdictOf(bundled!.maxRssMb < TARGET_MB ? [] : [`${bundled!.maxRssMb} MB >= ${TARGET_MB} MB`]),
    benchProcessPeakRssMb: benchPeakRssMb(),
    wallSeconds: wallSeconds(),
  };
}

function render(report: Report): string {
  const source = report.rows[1]!;
  const bundled = report.rows[0]!;
  const plain = report.rows[2]!;
  return [
    `Idle agent memory over ${report.windowSeconds} s, heartbeat every ${report.heartbeatSeconds} s (${report.machine.cpus} cores, Node ${report.machine.node})`,
    renderTable(
      ["process", "RSS at end", "max RSS", "vs sources", "above node -e"],
      report.rows.map((r) => [r.what, `${r.rssMb} MB`, `${r.maxRssMb} MB`, r.vsSource === undefined ? "-" : `${r.vsSource.toFixed(2)}x`, `${round(r.maxRssMb - plain.maxRssMb)} MB`]),
    ),
    `bundle: ${report.artifact.javascriptMb} MB of JavaScript, tarball ${report.artifact.tarballMb} MB, built in ${report.artifact.buildSeconds} s; sha256sum --check ${report.artifact.sha256Ms} ms (${report.artifact.sha256.slice(0, 16)}...)`,
    `bundle saves ${round(source.maxRssMb - bundled.maxRssMb)} MB against the sources`,
    `target: the bundle's idle agent under ${TARGET_MB} MB: ${report.verdict.why}`,
  ].join("\n");
}

process.exitCode = await runBenchmark<Options, Report>(
  {
    parse(argv) {
      const values = parseBenchArgs(argv, { "idle-seconds": { type: "string" } });
      const quick = values.quick === true;
      return {
        mode: quick ? "quick" : "full",
        output: resolve(values.output ?? join(root, "bench", "results", quick ? "bundle-rss-quick.json" : "bundle-rss.json")),
        check: values.check === true,
        idleSeconds: values["idle-seconds"] ? positiveInt("idle-seconds", values["idle-seconds"], 3600) : quick ? 10 : 60,
        settleSeconds: quick ? 3 : 10,
      };
    },
    run,
    render,
    hosts: "two emulators, the bundler and the sampling loop",
    missed: (report) => !report.verdict.met,
    stopping: "the agents and emulators",
  },
  process.argv.slice(2),
);
