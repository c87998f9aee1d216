import { cp, rename, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { ReleaseRoot } from "@bosun/agent";
import { appSchema, createLogger } from "@bosun/core";
import type { TestFleet } from "../test/helpers/fleet.ts";
import { Nginx, SiteRepo } from "../test/helpers/web.ts";
import { app, deployRoot, doneOn, releaseWithCli } from "./agents.ts";
import type { Cleanup } from "./harness.ts";
import { LoadProcess } from "./load.ts";
import { memoryOf, type Memory } from "./procfs.ts";
import type { Site } from "./sites.ts";
import { round, summarize, type Summary } from "./stats.ts";

export interface SwapOptions {
  /** Activations through the agent (each one a command and its `done`). */
  agentSwaps: number;
  /** Back-to-back ReleaseRoot.activate() calls in this process. */
  tightSwaps: number;
  /** Keep-alive connections of the load worker. */
  connections: number;
  /** The load stops by itself after this long, whatever happens here. */
  maxLoadSeconds: number;
}

export interface SwapRow {
  name: string;
  bosun: boolean;
  /** For a Bosun row the baseline beside it; for a baseline row the Bosun row whose pace it keeps. */
  pairedWith: string;
  swaps: number;
  loopSeconds: number;
  /** One swap, in µs: publish→`done` through the agent, one activate() in-process, the two renames for mv. */
  swapUs: Summary;
  requests: number;
  served: number;
  requestsPerSecond: number;
  failed: number;
  failedPerSwap: number;
  mixed: number;
  errors: string[];
}

export interface SwapResult {
  pageBytes: number;
  connections: number;
  rows: SwapRow[];
  /** The agent that swapped, after its swaps. */
  agentMemory: Memory;
}

export interface SwapContext {
  fleet: TestFleet;
  nodeId: string;
  site: Site;
  work: string;
  signal: AbortSignal;
  cleanup: Cleanup;
}

const names = {
  agent: "bosun: activate command → agent",
  pacedLikeAgent: "two mv, paced like the agent row",
  inProcess: "bosun: ReleaseRoot.activate() back to back",
  pacedLikeInProcess: "two mv, paced like the in-process row",
} as const;

/**
 * Swaps under load: nginx serves a ~64 KB page while the release is swapped between two
 * prepared ones, through Bosun (the agent; ReleaseRoot in-process) and through the classic
 * `mv public_html public_html.old && mv public_html.new public_html`, each baseline paced like
 * the Bosun row it is set beside, so both see the same load for the same time.
 */
export async function measureSwaps(ctx: SwapContext, options: SwapOptions): Promise<SwapResult> {
  const { kept, pageFiles, pageBytes } = await publishTwoReleases(ctx);
  const load = { pageFiles, options, cleanup: ctx.cleanup };
  const sequence = { last: Date.now() };
  const viaAgent = await swapThroughAgent(ctx, load, kept, sequence);
  const agent = ctx.fleet.processes.find((p) => p.name === ctx.nodeId);
  const agentMemory = await memoryOf(agent?.child.pid === undefined ? [] : [agent.child.pid]);

  const log = createLogger({ level: "warn", name: "bench" }, process.stderr);
  const root = new ReleaseRoot({ logger: log }, { app, settings: appSchema.parse({ root: join(ctx.work, "in-process", app), repos: [ctx.site.repo.dir] }) });
  for (const commit of kept) await root.prepare(ctx.site.repo.dir, commit, ctx.signal, log);
  await root.activate(kept[1]!, ++sequence.last, { signal: ctx.signal, log });
  // The classic layout: two directories holding the same trees as the two releases.
  const classic = join(ctx.work, "classic");
  await cp(join(root.releasesDir, kept[0]!), join(classic, "public_html"), { recursive: true });
  await cp(join(root.releasesDir, kept[1]!), join(classic, "public_html.new"), { recursive: true });
  const classicServer = await startNginx(ctx, "classic", join(classic, "public_html"));
  const twoMv = () => swapTwoMv(classic);
  const pacedLikeAgent = await underLoad(load, classicServer.url, viaAgent.swaps, twoMv, paceOf(viaAgent));

  const inProcessServer = await startNginx(ctx, "in-process", root.currentLink);
  const inProcess = await underLoad(load, inProcessServer.url, options.tightSwaps, async (i) => {
    const started = performance.now();
    const outcome = await root.activate(kept[i % 2]!, ++sequence.last, { signal: ctx.signal, log });
    const ms = performance.now() - started;
    expectActive(outcome, "in-process");
    return ms;
  });
  await inProcessServer.stop();
  const pacedLikeInProcess = await underLoad(load, classicServer.url, inProcess.swaps, twoMv, paceOf(inProcess));
  await classicServer.stop();
  return {
    pageBytes,
    connections: options.connections,
    rows: [
      { name: names.agent, bosun: true, pairedWith: names.pacedLikeAgent, ...viaAgent },
      { name: names.pacedLikeAgent, bosun: false, pairedWith: names.agent, ...pacedLikeAgent },
      { name: names.inProcess, bosun: true, pairedWith: names.pacedLikeInProcess, ...inProcess },
      { name: names.pacedLikeInProcess, bosun: false, pairedWith: names.inProcess, ...pacedLikeInProcess },
    ],
    agentMemory,
  };
}

/** Two releases whose page names them, published with `bosun release`: the agent prepares both and ends on the second. */
async function publishTwoReleases(ctx: SwapContext): Promise<{ kept: [string, string]; pageFiles: string[]; pageBytes: number }> {
  const pagesDir = join(ctx.work, "pages");
  await mkdir(pagesDir, { recursive: true });
  const kept: string[] = [];
  const pageFiles: string[] = [];
  for (const label of ["release-A", "release-B"]) {
    const page = SiteRepo.page(label);
    kept.push(await ctx.site.repo.commit({ "index.html": page }, label));
    pageFiles.push(join(pagesDir, `${label}.html`));
    await writeFile(join(pagesDir, `${label}.html`), page);
    await releaseWithCli(ctx.fleet, ctx.cleanup, ctx.site.repo.dir, 1, 120);
  }
  return { kept: [kept[0]!, kept[1]!], pageFiles, pageBytes: Buffer.byteLength(SiteRepo.page("release-A")) };
}

/** Each swap an `activate` command to the one node, timed from publish until its `done` arrived. */
async function swapThroughAgent(ctx: SwapContext, load: LoadSpec, kept: readonly [string, string], sequence: { last: number }): Promise<Measured> {
  const { fleet, nodeId } = ctx;
  const server = await startNginx(ctx, "agent", join(deployRoot(fleet, nodeId), "current"));
  const measured = await underLoad(load, server.url, load.options.agentSwaps, async (i) => {
    const command = fleet.command("activate", { app, commit: kept[i % 2]!, sequence: ++sequence.last }, { nodes: [nodeId] });
    const started = performance.now();
    const [done] = await Promise.all([doneOn(fleet, command.id, nodeId, 30_000), fleet.publish(command)]);
    expectActive((done.payload as { result?: unknown }).result, nodeId);
    return performance.now() - started;
  });
  await server.stop();
  return measured;
}

/** `mv public_html public_html.old && mv public_html.new public_html`; returns how long the site had no public_html, at most. */
async function swapTwoMv(dir: string): Promise<number> {
  const started = performance.now();
  await rename(join(dir, "public_html"), join(dir, "public_html.old"));
  await rename(join(dir, "public_html.new"), join(dir, "public_html"));
  const ms = performance.now() - started;
  // Ready for the next swap; the site does not read public_html.new.
  await rename(join(dir, "public_html.old"), join(dir, "public_html.new"));
  return ms;
}

function expectActive(result: unknown, who: string): void {
  const status = (result as { status?: string } | undefined)?.status;
  if (status !== "active") throw new Error(`${who}: activate ended ${status ?? "without a status"}: ${JSON.stringify(result)}`);
}

/** Mean time of one swap cycle of a row: the pace its baseline keeps. */
function paceOf(row: Measured): number {
  return (row.loopSeconds * 1000) / row.swaps;
}

async function startNginx(ctx: SwapContext, name: string, docroot: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const nginx = await Nginx.start(join(ctx.work, "nginx", name), docroot);
  return { url: `${nginx.url}/`, stop: ctx.cleanup.add(`nginx (${name})`, () => nginx.stop()) };
}

type Measured = Omit<SwapRow, "name" | "bosun" | "pairedWith">;

interface LoadSpec {
  pageFiles: readonly string[];
  options: SwapOptions;
  cleanup: Cleanup;
}

/**
 * Runs `count` swaps while the load worker requests the page; with `paceMs`, swap i starts
 * no earlier than i × paceMs after the first. Each swap returns the time it took.
 */
async function underLoad(
  load: LoadSpec,
  url: string,
  count: number,
  swap: (i: number) => Promise<number>,
  paceMs = 0,
): Promise<Measured> {
  const worker = await LoadProcess.start({ url, pageFiles: load.pageFiles, connections: load.options.connections, maxSeconds: load.options.maxLoadSeconds });
  const kill = load.cleanup.add("load worker", () => worker.kill());
  const swapUs: number[] = [];
  const began = performance.now();
  for (let i = 0; i < count; i++) {
    swapUs.push((await swap(i)) * 1000);
    const next = began + (i + 1) * paceMs;
    if (next > performance.now()) await delay(next - performance.now());
  }
  const loopSeconds = (performance.now() - began) / 1000;
  const stats = await worker.stop();
  await kill();
  return {
    swaps: count,
    loopSeconds: round(loopSeconds, 2),
    swapUs: summarize(swapUs),
    requests: stats.requests,
    served: stats.requests - stats.failed,
    requestsPerSecond: Math.round(stats.requests / stats.seconds),
    failed: stats.failed,
    failedPerSwap: round(stats.failed / count, 3),
    mixed: stats.mixed,
    errors: stats.errors,
  };
}
