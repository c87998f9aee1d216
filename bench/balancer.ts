/**
 * Balancers: Bosun's balancer role beside the classic way, on real HAProxy under wrk load,
 * measured in one run.
 *
 *   1. Churn: web nodes leave and join again and again under wrk load. Bosun: `lb-drain` (a
 *      signed command through SNS and SQS), then node-down, later node-up, applied by the
 *      balancer agent through HAProxy's runtime API. Baseline: a second HAProxy with the same
 *      config, rewritten and reloaded (SIGUSR2 to its master) for every change. Failed
 *      requests are wrk's socket errors plus non-2xx answers. Target: 0 for Bosun.
 *   2. Join: from node-up published (baseline: from the config written) to the first request
 *      that node serves, for every join of 1. Target: p99 under 2 s.
 *   3. Failover: two balancer agents hold one Elastic IP (EC2 on moto_server); the active one is
 *      killed with its HAProxy, and the time until the standby holds the address is measured,
 *      beside the check interval times the threshold (the time the checks alone take).
 *
 *   npx node bench/balancer.ts            full run (about 4 minutes on 2 cores)
 *   npx node bench/balancer.ts --quick    fewer rounds (about 2 minutes)
 *   options: --rounds N  --failovers N  --interval-ms N  --failures N  --output PATH  --check
 *
 * Prints tables and writes the figures to bench/results/balancer.json (a quick run to
 * balancer-quick.json). Loads go to 127.0.0.1 only.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdir, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { balancerSchema, type Envelope } from "@bosun/core";
import { TestFleet, type TestProcess } from "../test/helpers/fleet.ts";
import { haproxyProgram, killBalancer } from "../test/helpers/balancer.ts";
import { Moto, MotoAccount, motoMissing } from "../test/helpers/moto.ts";
import { until } from "../test/helpers/until.ts";
import { Backend, freePort } from "../test/helpers/web.ts";
import { renderConfig } from "../packages/agent/src/roles/balancer/haproxy.ts";
import { RuntimeApi } from "../packages/agent/src/roles/balancer/runtime.ts";
import { benchPeakRssMb, inTurn, machine, parseBenchArgs, positiveInt, progress, runBenchmark, verdictOf, wallSeconds, type Cleanup, type Machine, type Verdict } from "./harness.ts";
import { memoryOf, type Memory } from "./procfs.ts";
import { formatMs, formatRatio, renderTable, round, summarize, type Summary } from "./stats.ts";

const benchDir = dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);

const joinTarget = { p99Ms: 2000 } as const;
const SITES = 4;

function parseOptions(argv: readonly string[]) {
  const values = parseBenchArgs(argv, { rounds: { type: "string" }, failovers: { type: "string" }, "interval-ms": { type: "string" }, failures: { type: "string" } });
  const quick = values.quick;
  return {
    mode: quick ? ("quick" as const) : ("full" as const),
    /** Leave-and-join cycles per side. */
    rounds: values.rounds ? positiveInt("rounds", values.rounds, 1000) : quick ? 12 : 40,
    failovers: values.failovers ? positiveInt("failovers", values.failovers, 100) : quick ? 3 : 8,
    intervalMs: values["interval-ms"] ? positiveInt("interval-ms", values["interval-ms"], 60_000) : 1000,
    failures: values.failures ? positiveInt("failures", values.failures, 100) : 3,
    wrk: { threads: 1, connections: 8 },
    output: resolve(values.output ?? `${benchDir}/results/${quick ? "balancer-quick.json" : "balancer.json"}`),
    check: values.check,
  };
}

type BenchOptions = ReturnType<typeof parseOptions>;

/** A web node's site that notes when it serves its first request after being armed (checks aside). */
class TimedSite extends Backend {
  #armedAt: number | undefined;
  #first: ((at: number) => void) | undefined;

  /** Resolves with the time from now to the first request this site serves. */
  arm(): { since: number; served: Promise<number> } {
    this.#armedAt = performance.now();
    const served = new Promise<number>((resolve) => (this.#first = resolve));
    return { since: this.#armedAt, served };
  }

  protected override handle(request: IncomingMessage, response: ServerResponse): void {
    if (this.#first && !request.url?.startsWith("/health")) {
      const first = this.#first;
      this.#first = undefined;
      first(performance.now() - this.#armedAt!);
    }
    super.handle(request, response);
  }
}

/** wrk from Debian, stopped with SIGINT (it prints its summary then), and its failures read from that summary. */
class Wrk {
  readonly #child: ChildProcess;
  readonly #out: string[] = [];

  constructor(url: string, options: { threads: number; connections: number }) {
    this.#child = spawn("wrk", [`-t${options.threads}`, `-c${options.connections}`, "-d600s", "--timeout", "5s", url], { stdio: ["ignore", "pipe", "pipe"] });
    this.#child.stdout!.on("data", (chunk: Buffer) => this.#out.push(chunk.toString()));
  }

  async stop(): Promise<WrkResult> {
    const exited = once(this.#child, "exit");
    this.#child.kill("SIGINT");
    await exited;
    const text = this.#out.join("");
    const number = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
    const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
    const socketErrors = socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0;
    const non2xx = number(/Non-2xx or 3xx responses: (\d+)/);
    return { requests: number(/(\d+) requests in/), socketErrors, non2xx, failed: socketErrors + non2xx, requestsPerSecond: number(/Requests\/sec:\s+([\d.]+)/) };
  }

  kill(): void {
    if (this.#child.exitCode === null) this.#child.kill("SIGKILL");
  }
}

interface WrkResult {
  requests: number;
  socketErrors: number;
  non2xx: number;
  failed: number;
  requestsPerSecond: number;
}

interface ChurnSide {
  name: string;
  reloadSignalsResent?: number;
  changes: number;
  load: WrkResult;
  joinMs: Summary;
  seconds: number;
}

/**
 * The baseline: HAProxy with the same config as Bosun's, every change made by writing the whole
 * config and reloading it (SIGUSR2 to the master: a new worker takes the listener, the old one
 * soft-stops); a change is done when the new worker answers on the stats socket.
 */
class ReloadingHaproxy {
  readonly #dir: string;
  readonly #settings: ReturnType<typeof balancerSchema.parse>;
  readonly #runtime: RuntimeApi;
  #child: ChildProcess | undefined;
  readonly #stderr: string[] = [];
  /** Reload signals sent again because the first one was not acted on. */
  resent = 0;

  constructor(dir: string, settings: ReturnType<typeof balancerSchema.parse>) {
    this.#dir = dir;
    this.#settings = settings;
    this.#runtime = new RuntimeApi({ socket: join(dir, "admin.sock") });
  }

  async start(servers: Map<string, string>): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    await this.#write(servers);
    this.#child = spawn(haproxyProgram, ["-W", "-db", "-f", join(this.#dir, "haproxy.cfg"), "-p", join(this.#dir, "haproxy.pid")], { stdio: ["ignore", "ignore", "pipe"] });
    this.#child.stderr!.on("data", (chunk: Buffer) => this.#stderr.push(chunk.toString()));
    await until(() => this.#runtime.pid(), "the baseline HAProxy to answer");
  }

  /** Rewrites the config with these servers and reloads; resolves once the new worker answers. */
  async apply(servers: Map<string, string>): Promise<void> {
    const before = await this.#runtime.pid();
    await this.#write(servers);
    // A master still busy with the previous reload may miss a signal: it is sent again after a while, as an operator would.
    for (let attempt = 1; ; attempt++) {
      this.#child!.kill("SIGUSR2");
      const reloaded = await until(async () => ((await this.#runtime.pid()) !== before ? true : undefined), "the reloaded worker", 5000, 20).catch(() => false);
      if (reloaded) return;
      this.resent += 1;
      if (attempt === 4) throw new Error(`the baseline HAProxy did not reload after 4 signals: ${this.#stderr.join("").slice(-500)}`);
    }
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    await exited;
  }

  async #write(servers: Map<string, string>): Promise<void> {
    const config = renderConfig(this.#settings, this.#dir, [...servers].map(([name, address]) => ({ name, address, state: "ready" as const })));
    await writeFile(join(this.#dir, "haproxy.cfg"), config);
    await run(haproxyProgram, ["-c", "-q", "-f", join(this.#dir, "haproxy.cfg")]);
  }
}

interface FailoverRow {
  round: number;
  from: string;
  to: string;
  heldMs: number;
  /** What the takeover event says: first failed check to holding the address. */
  eventTookMs?: number;
}

interface Report {
  benchmark: "balancer";
  mode: BenchOptions["mode"];
  finishedAt: string;
  machine: Machine;
  settings: Omit<BenchOptions, "output" | "check" | "mode"> & { sites: number; checkIntervalMs: number; debounceMs: number };
  targets: { churnFailed: 0; join: typeof joinTarget };
  churn: { bosun: ChurnSide; baseline: ChurnSide; failedRatio: string; target: Verdict };
  join: { bosun: Summary; baseline: Summary; p99Ratio: number; target: Verdict };
  failover: { intervalMs: number; failures: number; checksAloneMs: number; rows: FailoverRow[]; heldMs: Summary; ratioToChecks: number; skipped?: string };
  agentMemory: (Memory & { agent: string; after: string })[];
  benchProcessPeakRssMb: number;
  wallSeconds: number;
}

async function runBench(options: BenchOptions, cleanup: Cleanup): Promise<Report> {
  const fleet = await TestFleet.start({ lostAfterSeconds: 600, heartbeatSeconds: 30 });
  cleanup.add("agents and emulator", () => fleet.close());
  const sites = await Promise.all(Array.from({ length: SITES }, (_, i) => new TimedSite(`web-${i + 1}`).start()));
  cleanup.add("sites", () => Promise.all(sites.map((s) => s.close())));
  const check = { path: "/health", interMs: 1000, fall: 2, rise: 1 };
  const debounceMs = 250;
  const agentMemory: Report["agentMemory"] = [];

  // Bosun's balancer.
  const lbPort = await freePort();
  const lbDir = join(fleet.dir, "haproxy-lb-1");
  const lb = await fleet.startAgent("lb-1", ["balancer"], {
    BOSUN_BALANCER: JSON.stringify({ haproxy: haproxyProgram, dir: lbDir, listen: { host: "127.0.0.1", port: lbPort }, check, debounceMs, pollSeconds: 1, drainTimeoutSeconds: 10 }),
  });
  await lb.waitForLog((r) => r.msg === "balancer ready", "HAProxy to start", 20_000);
  const lbRuntime = new RuntimeApi({ socket: join(lbDir, "admin.sock") });
  const lbServers = async () => new Set((await lbRuntime.servers("web")).map((s) => s.name));
  await Promise.all(sites.map((s) => fleet.publish(fleet.nodeEvent("node-up", s.name, { port: s.port }))));
  await until(async () => ((await lbServers()).size === SITES ? true : undefined), "every site in Bosun's backend");
  agentMemory.push({ agent: "lb-1", after: "start, 4 backends", ...(await memoryOf([lb.child.pid!])) });

  // The baseline's HAProxy.
  const basePort = await freePort();
  const baseSettings = balancerSchema.parse({ listen: { host: "127.0.0.1", port: basePort }, check });
  const baseline = new ReloadingHaproxy(join(fleet.dir, "haproxy-baseline"), baseSettings);
  const all = new Map(sites.map((s) => [s.name, `127.0.0.1:${s.port}`]));
  await baseline.start(all);
  cleanup.add("baseline haproxy", () => baseline.stop());

  const bosunSide = async (): Promise<ChurnSide> => {
    progress(`churn through Bosun: ${options.rounds} drains, leaves and joins under wrk`);
    const joins: number[] = [];
    const wrk = new Wrk(`http://127.0.0.1:${lbPort}/`, options.wrk);
    cleanup.add("wrk (bosun)", async () => wrk.kill());
    const began = performance.now();
    for (let i = 0; i < options.rounds; i++) {
      const site = sites[i % SITES]!;
      const drain = fleet.command("lb-drain", { node: site.name, timeoutSeconds: 10 }, { roles: ["balancer"] });
      await fleet.publish(drain);
      await fleet.waitForNodeEvent(drain.id, "lb-1", "done", 30_000);
      await fleet.publish(fleet.nodeEvent("node-down", site.name));
      await until(async () => ((await lbServers()).has(site.name) ? undefined : true), `${site.name} to leave`, 20_000, 20);
      const timed = site.arm();
      await fleet.publish(fleet.nodeEvent("node-up", site.name, { port: site.port }));
      joins.push(await timed.served);
    }
    const seconds = (performance.now() - began) / 1000;
    const load = await wrk.stop();
    return { name: "Bosun (runtime API)", changes: options.rounds * 2, load, joinMs: summarize(joins), seconds: round(seconds) };
  };

  const baselineSide = async (): Promise<ChurnSide> => {
    progress(`churn through config rewrites and reloads: ${options.rounds} leaves and joins under wrk`);
    const joins: number[] = [];
    const wrk = new Wrk(`http://127.0.0.1:${basePort}/`, options.wrk);
    cleanup.add("wrk (baseline)", async () => wrk.kill());
    const began = performance.now();
    for (let i = 0; i < options.rounds; i++) {
      const site = sites[i % SITES]!;
      const without = new Map(all);
      without.delete(site.name);
      await baseline.apply(without);
      const timed = site.arm();
      await baseline.apply(all);
      joins.push(await timed.served);
    }
    const seconds = (performance.now() - began) / 1000;
    const load = await wrk.stop();
    if (baseline.resent) progress(`the baseline's master missed ${baseline.resent} reload signal(s); each was sent again`);
    return { name: "baseline (rewrite + reload)", changes: options.rounds * 2, load, joinMs: summarize(joins), seconds: round(seconds), reloadSignalsResent: baseline.resent };
  };

  const [bosun, base] = await inTurn(0, bosunSide, baselineSide);
  agentMemory.push({ agent: "lb-1", after: `${options.rounds} leave-and-join cycles under load`, ...(await memoryOf([lb.child.pid!])) });
  progress(`churn: Bosun ${bosun.load.failed} failed of ${bosun.load.requests}, baseline ${base.load.failed} failed of ${base.load.requests}`);
  await lb.stop(15_000);

  const failover = await measureFailover(fleet, options, agentMemory, cleanup);
  const p99Ratio = round(bosun.joinMs.p99 / base.joinMs.p99, 2);
  return {
    benchmark: "balancer",
    mode: options.mode,
    finishedAt: new Date().toISOString(),
    machine: machine(),
    settings: { rounds: options.rounds, failovers: options.failovers, intervalMs: options.intervalMs, failures: options.failures, wrk: options.wrk, sites: SITES, checkIntervalMs: check.interMs, debounceMs },
    targets: { churnFailed: 0, join: joinTarget },
    churn: {
      bosun,
      baseline: base,
      // A ratio with a zero on either side says little: both counts, and the ratio when it means something.
      failedRatio: `${bosun.load.failed} vs ${base.load.failed}${bosun.load.failed > 0 && base.load.failed > 0 ? ` (${formatRatio(bosun.load.failed / base.load.failed)})` : ""}`,
      target: verdictOf(bosun.load.failed === 0 ? [] : [`${bosun.load.failed} failed requests`]),
    },
    join: { bosun: bosun.joinMs, baseline: base.joinMs, p99Ratio, target: verdictOf(bosun.joinMs.p99 < joinTarget.p99Ms ? [] : [`p99 ${formatMs(bosun.joinMs.p99)}`]) },
    failover,
    agentMemory,
    benchProcessPeakRssMb: benchPeakRssMb(),
    wallSeconds: wallSeconds(),
  };
}

async function measureFailover(fleet: TestFleet, options: BenchOptions, agentMemory: Report["agentMemory"], cleanup: Cleanup): Promise<Report["failover"]> {
  const checksAloneMs = options.intervalMs * options.failures;
  const empty = { intervalMs: options.intervalMs, failures: options.failures, checksAloneMs, rows: [], heldMs: summarize([0]), ratioToChecks: 0 };
  const missing = motoMissing();
  if (missing) return { ...empty, skipped: missing };
  progress(`failover: ${options.failovers} deaths of the active balancer, checks every ${options.intervalMs} ms, ${options.failures} failures to take over`);
  const moto = await Moto.start();
  cleanup.add("moto", () => moto.stop());
  const account = new MotoAccount(moto.endpoint);
  cleanup.add("moto clients", async () => account.close());
  const { subnetId } = await account.network();
  const [a, b] = await account.instances(subnetId, 2);
  const { allocationId } = await account.elasticIp();
  const ports = { [a!]: await freePort(), [b!]: await freePort() };
  const procs = new Map<string, TestProcess>();
  const dir = (id: string) => join(fleet.dir, `haproxy-${id}`);
  const start = async (id: string) => {
    const other = id === a ? b! : a!;
    const proc = await fleet.startAgent(id, ["balancer"], {
      AWS_ENDPOINT_URL_EC2: moto.endpoint,
      BOSUN_BALANCER: JSON.stringify({
        haproxy: haproxyProgram,
        dir: dir(id),
        listen: { host: "127.0.0.1", port: ports[id] },
        pair: { peer: `http://127.0.0.1:${ports[other]}/.bosun-lb`, intervalMs: options.intervalMs, timeoutMs: Math.min(1000, options.intervalMs), failures: options.failures, entry: { kind: "eip", allocationId } },
      }),
    });
    procs.set(id, proc);
    return proc;
  };
  const holder = () => account.holder(allocationId);
  await (await start(a!)).waitForLog((r) => r.msg === "took over the entry point: active", "the first balancer to take the address", 30_000);
  await (await start(b!)).waitForLog((r) => /standby/.test(String(r.msg)), "the second balancer to stand by", 30_000);
  const rows: FailoverRow[] = [];
  for (let round = 1; round <= options.failovers; round++) {
    const active = (await holder())!;
    const standby = active === a ? b! : a!;
    const began = performance.now();
    await killBalancer(procs.get(active)!, dir(active));
    const heldMs = await until(async () => ((await holder()) === standby ? performance.now() - began : undefined), "the standby to hold the address", 60_000, 20);
    const event = await fleet.waitForEvent((e: Envelope) => e.type === "lb-takeover" && (e.payload as { node: { id: string } }).node.id === standby && Date.parse(e.issuedAt) >= Date.now() - heldMs - 2000, "the takeover event", 20_000);
    const tookMs = (event.payload as { tookMs?: number }).tookMs;
    rows.push({ round, from: active, to: standby, heldMs: round2(heldMs), ...(tookMs === undefined ? {} : { eventTookMs: tookMs }) });
    progress(`failover ${round}: ${active} died, ${standby} held the address after ${formatMs(heldMs)}`);
    // The dead one comes back as standby, for the next round to kill the other.
    await (await start(active)).waitForLog((r) => /standby/.test(String(r.msg)), "the recovered balancer to stand by", 30_000);
  }
  agentMemory.push({ agent: "pair", after: `${options.failovers} failovers`, ...(await memoryOf([...procs.values()].filter((p) => p.child.exitCode === null && p.child.signalCode === null).map((p) => p.child.pid!))) });
  const heldMs = summarize(rows.map((r) => r.heldMs));
  return { intervalMs: options.intervalMs, failures: options.failures, checksAloneMs, rows, heldMs, ratioToChecks: round(heldMs.p50 / checksAloneMs, 2) };
}

const round2 = (n: number) => round(n, 0);

function render(report: Report): string {
  const { churn, join, failover } = report;
  const churnRows = [churn.bosun, churn.baseline].map((side) => [
    side.name,
    String(side.changes),
    String(side.load.requests),
    String(side.load.failed),
    `${side.load.socketErrors} / ${side.load.non2xx}`,
    String(round(side.load.requestsPerSecond, 0)),
    `${side.seconds} s`,
  ]);
  const joinRows = [
    ["Bosun: node-up published → first request served", join.bosun],
    ["baseline: config written → first request served", join.baseline],
  ].map(([name, s]) => [name as string, String((s as Summary).count), formatMs((s as Summary).p50), formatMs((s as Summary).p99), formatMs((s as Summary).max)]);
  const failoverLines = failover.skipped
    ? [`   skipped: ${failover.skipped}`]
    : [
        renderTable(
          ["round", "from", "to", "active died → standby holds the EIP", "takeover event: first failed check → held"],
          failover.rows.map((r) => [String(r.round), r.from, r.to, formatMs(r.heldMs), r.eventTookMs === undefined ? "" : formatMs(r.eventTookMs)]),
        ),
        "",
        `   p50 ${formatMs(failover.heldMs.p50)}, max ${formatMs(failover.heldMs.max)} with checks every ${failover.intervalMs} ms and ${failover.failures} failures to take over (interval × failures: ${formatMs(failover.checksAloneMs)}); p50 / (interval × failures) = ${formatRatio(failover.ratioToChecks)}.`,
        `   A dead peer refuses connections at once, so the ${failover.failures} failures come ${failover.failures - 1} intervals after the first one, which comes up to an interval after the death; then one DescribeAddresses, a check of its own HAProxy, DisassociateAddress and AssociateAddress.`,
      ];
  const memoryRows = report.agentMemory.map((m) => [m.agent, m.after, String(m.processes), `${m.maxRssMb} MB`, `${m.maxPeakRssMb} MB`]);
  return [
    `1. Churn under wrk load (${report.settings.wrk.threads} thread, ${report.settings.wrk.connections} connections; ${report.settings.sites} sites; each change a leave or a join). Target: 0 failed for Bosun.`,
    "",
    renderTable(["path", "changes", "requests", "failed", "socket errors / non-2xx", "req/s", "took"], churnRows),
    "",
    `   failed requests, Bosun / baseline: ${churn.failedRatio}; target met: ${churn.target.why}`,
    "",
    `2. Join latency (debounce ${report.settings.debounceMs} ms, HAProxy checks every ${report.settings.checkIntervalMs} ms). Target: Bosun p99 under ${formatMs(joinTarget.p99Ms)}.`,
    "",
    renderTable(["path", "joins", "p50", "p99", "max"], joinRows),
    "",
    `   p99 Bosun / baseline: ${formatRatio(join.p99Ratio)}; target met: ${join.target.why}`,
    "",
    `3. Failover of a balancer pair (EC2 Elastic IP on moto_server, real HAProxy): the active agent and its HAProxy killed.`,
    "",
    ...failoverLines,
    "",
    "Memory: balancer agents' resident memory from /proc.",
    "",
    renderTable(["agent", "after", "processes", "RSS", "peak RSS"], memoryRows),
    "",
  ].join("\n");
}

process.exitCode = await runBenchmark(
  {
    parse: parseOptions,
    run: runBench,
    missed: (report) => !report.churn.target.met || !report.join.target.met,
    render,
    hosts: "the emulator, the fleet's event watcher and the web sites",
    stopping: "wrk, HAProxy, agents, moto and the emulator",
  },
  process.argv.slice(2),
);
