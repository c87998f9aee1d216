import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { resolveRef } from "@bosun/coordinator";
import type { Envelope } from "@bosun/core";
import { fetchCommit, freeBytes, unlimitedFetch } from "../packages/agent/src/roles/web/git.ts";
import { checkoutRelease, pristineManifest, type ReleaseManifest } from "../packages/agent/src/roles/web/checkout.ts";
import type { TestFleet, TestProcess } from "../test/helpers/fleet.ts";
import { deployRoot, nodeOf, releaseWithCli } from "./agents.ts";
import { progress, verdictOf, type Cleanup, type Verdict } from "./harness.ts";
import { commitChange, type Site } from "./sites.ts";
import { round, summarize, type Summary } from "./stats.ts";

const run = promisify(execFile);

export const publishTarget = { agents: 50, incrementalMs: 5000 } as const;

/** What the baseline does, and with how many at once. */
export const baselines = {
  cold: "git clone --no-local",
  incremental: "git pull --ff-only",
  parallelism: "N clones (or pulls) all at once, as N agents fetch at once when the release reaches them",
} as const;

export interface PublishRow {
  agents: number;
  repo: string;
  release: "cold" | "incremental";
  /** Spawning `bosun release … --wait --json` until it exited with every node active. */
  bosunMs: number;
  /** N clones (cold) or pulls (incremental) of the same repository, all at once, until the last finished. */
  baselineMs: number;
  ratio: number;
  /** From spawning the CLI until the last node signed its prepare `done` / its activate `done` (node clocks). */
  lastPreparedMs: number;
  lastActiveMs: number;
  /** Each node's time in the release (prepare) handler: fetch, checkout, verify. */
  prepareOnNodeMs: Summary;
  target?: Verdict;
}

/** One node's git work, in this process with nothing else running: where a release's time goes. */
export interface SingleNodeRow {
  repo: string;
  release: "cold" | "incremental";
  fetchMs: number;
  checkoutVerifyMs: number;
  baseline: string;
  baselineMs: number;
}

export interface PublishContext {
  fleet: TestFleet;
  agents: readonly TestProcess[];
  work: string;
  signal: AbortSignal;
  cleanup: Cleanup;
  timeoutSeconds: number;
}

/** Runs git commands all at once; resolves with the time until the last one finished. */
async function gitAtOnce(commands: readonly string[][], signal: AbortSignal): Promise<number> {
  const started = performance.now();
  await Promise.all(commands.map((args) => run("git", args, { signal, maxBuffer: 2 ** 20 })));
  return round(performance.now() - started);
}

async function timed<T>(work: () => Promise<T>): Promise<number> {
  const started = performance.now();
  await work();
  return round(performance.now() - started);
}

/** One git call that prints nothing, made through the agent's git functions and as a plain child process. */
export interface GitCallCost {
  command: string;
  calls: number;
  agentMs: Summary;
  execFileMs: Summary;
}

/**
 * What one git invocation costs the agent: fetchCommit of a commit its mirror already holds
 * runs exactly one, `git cat-file -e` (silent), beside the same command through execFile. A
 * release runs about ten git commands per node, most of them silent.
 */
export async function measureGitCallCost(site: Site, work: string, calls: number, signal: AbortSignal): Promise<GitCallCost> {
  const mirror = join(work, "git-call", "mirror.git");
  const commit = await resolveRef(site.repo.dir, "main", signal);
  try {
    await fetchCommit(mirror, site.repo.dir, commit, signal, unlimitedFetch);
    const args = [`--git-dir=${mirror}`, "cat-file", "-e", `${commit}^{commit}`];
    const agentMs: number[] = [];
    const execFileMs: number[] = [];
    for (let i = 0; i < calls; i++) {
      agentMs.push(await timed(() => fetchCommit(mirror, site.repo.dir, commit, signal, unlimitedFetch)));
      execFileMs.push(await timed(() => run("git", args, { signal })));
    }
    return { command: `git cat-file -e <commit>^{commit}`, calls, agentMs: summarize(agentMs), execFileMs: summarize(execFileMs) };
  } finally {
    await rm(join(work, "git-call"), { recursive: true, force: true });
  }
}

export { freeBytes };

/**
 * One node's release, step by step, with the agent's own git functions: fetch into an empty
 * mirror and check out (cold), then a one-file change (incremental); beside a clone and a pull.
 */
export async function measureSingleNode(site: Site, work: string, signal: AbortSignal): Promise<SingleNodeRow[]> {
  const dir = join(work, "single-node", site.label.replace(/\W+/g, "-"));
  const mirror = join(dir, "mirror.git");
  const clone = join(dir, "clone");
  await mkdir(dir, { recursive: true });
  const rows: SingleNodeRow[] = [];
  let previous: { dir: string; manifest: ReleaseManifest } | undefined;
  try {
    for (const release of ["cold", "incremental"] as const) {
      if (release === "incremental") await commitChange(site, `single-node change of ${site.label}`);
      const commit = await resolveRef(site.repo.dir, "main", signal);
      const fetchMs = await timed(() => fetchCommit(mirror, site.repo.dir, commit, signal, unlimitedFetch));
      // The incremental release links what the cold one holds unchanged, as a node does.
      const target = join(dir, release);
      const checkoutVerifyMs = await timed(async () => {
        const checkout = await checkoutRelease(mirror, commit, target, signal, { reuse: previous });
        previous = { dir: target, manifest: await pristineManifest(target, commit, checkout) };
      });
      const baselineArgs = release === "cold" ? ["clone", "--no-local", "--quiet", site.repo.dir, clone] : ["-C", clone, "pull", "--ff-only", "--quiet"];
      rows.push({ repo: site.label, release, fetchMs, checkoutVerifyMs, baseline: baselines[release], baselineMs: await gitAtOnce([baselineArgs], signal) });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

/**
 * Publishes a site to the first `n` agents: cold (their deploy roots wiped, so the mirror is
 * empty), then a one-file change; then the baseline, N clones and N pulls at once. With `keep`,
 * the nodes keep both releases (the activation spread swaps between them); otherwise their
 * roots are wiped before the clones, so the disk holds one side's copies at a time.
 */
export async function publishRows(ctx: PublishContext, site: Site, n: number, keep: boolean): Promise<{ rows: PublishRow[]; prepared: [string, string] }> {
  const nodes = ctx.agents.slice(0, n).map((a) => a.name);
  await wipeRoots(ctx, nodes);
  progress(`${site.label} × ${n} node(s): cold release`);
  const cold = await timedRelease(ctx, site, nodes);
  await commitChange(site, `change of ${site.label} for ${n} node(s)`);
  progress(`${site.label} × ${n} node(s): incremental release`);
  const incremental = await timedRelease(ctx, site, nodes);
  if (!keep) await wipeRoots(ctx, nodes);

  progress(`${site.label} × ${n} node(s): ${n} × ${baselines.cold}, then ${n} × ${baselines.incremental}`);
  const clones = join(ctx.work, "clones", `${site.label.replace(/\W+/g, "-")}-${n}`);
  let cloneMs: number;
  let pullMs: number;
  try {
    cloneMs = await gitAtOnce(nodes.map((_, i) => ["clone", "--no-local", "--quiet", site.repo.dir, join(clones, String(i))]), ctx.signal);
    await commitChange(site, `baseline change of ${site.label} for ${n} node(s)`);
    pullMs = await gitAtOnce(nodes.map((_, i) => ["-C", join(clones, String(i)), "pull", "--ff-only", "--quiet"]), ctx.signal);
  } finally {
    await rm(clones, { recursive: true, force: true });
  }
  const row = (release: PublishRow["release"], timing: ReleaseTiming, baselineMs: number): PublishRow => ({
    agents: n,
    repo: site.label,
    release,
    bosunMs: timing.bosunMs,
    baselineMs,
    ratio: round(timing.bosunMs / baselineMs, 2),
    lastPreparedMs: timing.lastPreparedMs,
    lastActiveMs: timing.lastActiveMs,
    prepareOnNodeMs: timing.prepareOnNodeMs,
  });
  return { rows: [row("cold", cold, cloneMs), row("incremental", incremental, pullMs)], prepared: [cold.commit, incremental.commit] };
}

interface ReleaseTiming {
  commit: string;
  bosunMs: number;
  lastPreparedMs: number;
  lastActiveMs: number;
  prepareOnNodeMs: Summary;
}

/** `bosun release` timed from spawn to exit, and each node's `done` events for its two phases. */
async function timedRelease(ctx: PublishContext, site: Site, nodes: readonly string[]): Promise<ReleaseTiming> {
  const release = await releaseWithCli(ctx.fleet, ctx.cleanup, site.repo.dir, nodes.length, ctx.timeoutSeconds);
  const { commit } = release.result;
  // The CLI has seen every `done`; the fleet's own watcher may be a moment behind it.
  const doneOf = (nodeId: string, commandType: string) =>
    ctx.fleet.waitForEvent(
      (e) =>
        e.type === "done" &&
        nodeOf(e) === nodeId &&
        Date.parse(e.issuedAt) >= release.startedWall &&
        (e.payload as { commandType: string; result?: { commit?: string } }).commandType === commandType &&
        (e.payload as { result?: { commit?: string } }).result?.commit === commit,
      `${nodeId}'s ${commandType} done for ${commit}`,
      30_000,
    );
  const prepared = await Promise.all(nodes.map((id) => doneOf(id, "release")));
  const activated = await Promise.all(nodes.map((id) => doneOf(id, "activate")));
  const last = (events: Envelope[]) => Math.max(...events.map((e) => Date.parse(e.issuedAt))) - release.startedWall;
  return {
    commit,
    bosunMs: round(release.ms),
    lastPreparedMs: last(prepared),
    lastActiveMs: last(activated),
    prepareOnNodeMs: summarize(prepared.map((e) => (e.payload as { durationMs: number }).durationMs)),
  };
}

async function wipeRoots(ctx: PublishContext, nodes: readonly string[]): Promise<void> {
  await Promise.all(nodes.map((id) => rm(deployRoot(ctx.fleet, id), { recursive: true, force: true })));
}

/** The target applies to an incremental release of the small site on 50 nodes. */
export function publishVerdict(row: PublishRow, smallLabel: string): Verdict | undefined {
  if (row.release !== "incremental" || row.repo !== smallLabel || row.agents !== publishTarget.agents) return undefined;
  return verdictOf(row.bosunMs < publishTarget.incrementalMs ? [] : [`${(row.bosunMs / 1000).toFixed(2)} s >= 5 s`]);
}
