import { Bus, stateKeys } from "@bosun/aws";
import { CommandFailedError, ConfigError, appNamePattern, commitPattern, createMessage, errorSummary, type DesiredRelease, type Target } from "@bosun/core";
import { expectedNodes, publishAndFollow, type FollowResult, type NodeProgress } from "./follow.ts";
import { resolveRef } from "./git.ts";
import { desiredReleases } from "./desired.ts";
import type { Issuer } from "./issuer.ts";
import { drainBackend, enableBackend } from "./balancer.ts";
import type { SendResult } from "./send.ts";

export interface ReleaseOptions {
  app: string;
  ref: string;
  repo?: string | undefined;
  wait: boolean;
  /** `N` nodes or `N%` of them per activation batch; all at once when unset. */
  batch?: string | undefined;
  /** Nodes that may fail before the rollout stops and switched nodes return to the previous release. */
  maxFailures: number;
  timeoutSeconds: number;
  /** Milliseconds between sending `activate` and the moment every node swaps; default grows with the batch. */
  swapDelayMs?: number | undefined;
  /**
   * Take each batch (one node by default) out of the balancers before it swaps and put it back
   * after: `lb-drain` (its sessions finish), `activate`, `lb-enable`.
   */
  drain?: boolean | undefined;
  /** With `drain`: how long balancers wait for a node's sessions (default: their drainTimeoutSeconds). */
  drainTimeoutSeconds?: number | undefined;
  onProgress?: (phase: string, nodes: NodeProgress[]) => void;
}

export interface NodeFailure {
  node: string;
  phase: "prepare" | "drain" | "activate" | "enable";
  detail: string;
}

export interface ReleaseResult {
  app: string;
  ref: string;
  repo: string;
  commit: string;
  sequence: number;
  /** Without --wait: the release command's id; nodes prepare and activate on their own. */
  commandId?: string;
  prepared?: string[];
  active?: string[];
  skipped?: string[];
  failed?: NodeFailure[];
  rolledBack?: string[];
  /** Why the rollout stopped early, if it did. */
  stopped?: string;
  ok: boolean;
}

const web: Target = { roles: ["web"] };

/**
 * The repository of an app: --repo, else the one its last release came from (a desired record
 * names only a repository that was checked: see below), else the first in the app's settings.
 * Everything the publisher can check is checked here, before anything is recorded.
 */
async function repoFor(ctx: Issuer, options: ReleaseOptions, previous: DesiredRelease | undefined): Promise<string> {
  const { app } = options;
  const known = ctx.settings.apps[app];
  const repo = options.repo ?? previous?.repo ?? known?.repos[0];
  if (!repo) throw new ConfigError(`No repository for app ${app}: pass --repo URL (received none, and no earlier release or app setting names one)`);
  if (known && !known.repos.includes(repo)) {
    throw new ConfigError(`Invalid --repo: ${repo} is not on app ${app}'s allowlist (apps.${app}.repos: ${known.repos.join(", ")}); web nodes would refuse it`);
  }
  if (!known && !options.wait) {
    // Without --wait the release is recorded as desired before any node has looked at it; a
    // repository no node accepts would then hold back every later release and every boot.
    throw new ConfigError(
      `Cannot check repository ${repo} for app ${app}: this config has no apps.${app}, and without --wait the release is recorded before any node checks it; add the app to the config or pass --wait`,
    );
  }
  return repo;
}

/**
 * Publishes a release of an app to every web node. The ref is resolved to one commit here, so
 * every node deploys the same commit even if a branch moves. With `wait`, the rollout runs in
 * phases: every node prepares, then nodes activate together (or in batches), each behind its
 * own health check; past the failure budget the rollout stops and switched nodes go back.
 */
export async function releaseApp(ctx: Issuer, options: ReleaseOptions): Promise<ReleaseResult> {
  if (!appNamePattern.test(options.app)) throw new ConfigError(`Invalid --app: expected lower-case letters, digits or '-', received ${JSON.stringify(options.app)}`);
  batches(["check"], options.batch); // a bad --batch stops here, before anything is written
  if (options.drain && !options.wait) throw new ConfigError("Invalid --drain: it drains, swaps and re-enables node by node, which needs --wait");
  const desiredRecords = desiredReleases(ctx);
  const previous = await desiredRecords.read(options.app);
  const repo = await repoFor(ctx, options, previous);
  let commit: string;
  try {
    commit = await resolveRef(repo, options.ref, AbortSignal.timeout(60_000));
  } catch (error) {
    throw new ConfigError(`Cannot resolve ref ${JSON.stringify(options.ref)} in ${repo}: ${errorSummary(error)}`, { cause: error });
  }
  const signer = ctx.signer();
  const sequence = Math.max(Date.now(), (previous?.sequence ?? 0) + 1);
  /** The record names the release desired before it, as it is when the record is written. */
  const desiredAfter = (before: DesiredRelease | undefined): DesiredRelease => ({
    app: options.app,
    repo,
    commit,
    ref: options.ref,
    sequence,
    publishedAt: new Date().toISOString(),
    issuer: signer.keyId,
    ...(before && before.commit !== commit ? { previous: before.commit } : before?.previous ? { previous: before.previous } : {}),
  });
  const recordDesired = async () => {
    const { written } = await desiredRecords.record(options.app, desiredAfter);
    if (!written) throw new CommandFailedError(`A newer release of ${options.app} was recorded while this one was published; it stays desired`);
  };
  const bus = new Bus({ clients: ctx.clients }, { topicArn: await ctx.topicArn() });
  const base = { app: options.app, ref: options.ref, repo, commit, sequence };
  const command = (type: string, payload: unknown, target: Target) =>
    createMessage(signer, { kind: "command", type, payload, target, ttlSeconds: Math.max(ctx.settings.commandTtlSeconds, options.timeoutSeconds * 2) });

  if (!options.wait) {
    await recordDesired();
    const envelope = command("release", { app: options.app, repo, commit, sequence, activate: true }, web);
    await bus.publish(envelope);
    return { ...base, commandId: envelope.id, ok: true };
  }

  const expected = await expectedNodes(ctx, web);
  if (expected.length === 0) throw new CommandFailedError(`No web node is up to release to (bosun nodes --role web)`);
  const run = (type: string, payload: unknown, target: Target, nodes: string[], phase: string): Promise<FollowResult> =>
    publishAndFollow(ctx, bus, command(type, payload, target), nodes, options.timeoutSeconds * 1000, (progress) => options.onProgress?.(phase, progress));
  const failed: NodeFailure[] = [];
  const failuresOf = (result: FollowResult, phase: NodeFailure["phase"]) =>
    result.nodes.filter((n) => n.state !== "done").map((n) => ({ node: n.node, phase, detail: n.state === "waiting" || n.state === "acked" || n.state === "running" ? "no answer in time" : (n.detail ?? n.state) }));

  /** A stopped rollout leaves the desired release as it was, so nodes that boot later do not sync to it. */
  const restoreDesired = async (rollbackSequence: number) => {
    if (previous) await desiredRecords.record(options.app, () => ({ ...previous, sequence: rollbackSequence, rollback: true }));
    else await desiredRecords.removeIf(options.app, sequence);
  };
  const prepare = await run("release", { app: options.app, repo, commit, sequence, activate: false }, web, expected, "prepare");
  failed.push(...failuresOf(prepare, "prepare"));
  const prepared = prepare.nodes.filter((n) => n.state === "done").map((n) => n.node);
  if (failed.length > options.maxFailures) {
    // Nothing was recorded: the nodes' refusal (a repository off their allowlist, a failed build) never becomes desired.
    return { ...base, prepared, active: [], failed, rolledBack: [], stopped: `${failed.length} node(s) failed to prepare; budget is ${options.maxFailures}; no node was switched`, ok: false };
  }
  // Recorded once the nodes have accepted it, before any switches: a node booting from now on syncs to it.
  await recordDesired();

  const active: string[] = [];
  const skipped: string[] = [];
  const previousOf = new Map<string, string | undefined>();
  /** Nodes sent `activate` that did not say how it ended: they may have switched. */
  const unknown: string[] = [];
  let stopped: string | undefined;
  const overBudget = () => `${failed.length} node(s) failed; budget is ${options.maxFailures}; the rollout stopped`;
  const followed = { wait: true, timeoutSeconds: options.timeoutSeconds, ...(options.onProgress ? { onProgress: (nodes: NodeProgress[]) => options.onProgress?.("drain", nodes) } : {}) };
  /** Drains each node of a batch on every balancer; those no balancer could drain are failures, and do not swap. */
  const drainEach = async (nodes: string[]): Promise<string[]> => {
    const results = await Promise.all(nodes.map(async (node) => ({ node, result: await drainBackend(ctx, { node, drainTimeoutSeconds: options.drainTimeoutSeconds, ...followed }) })));
    for (const { node, result } of results) if (!result.result?.ok) failed.push({ node, phase: "drain", detail: balancerFailure(result) });
    return results.filter(({ result }) => result.result?.ok).map(({ node }) => node);
  };
  const enableEach = async (nodes: string[]): Promise<void> => {
    const results = await Promise.all(nodes.map(async (node) => ({ node, result: await enableBackend(ctx, { node, ...followed }) })));
    for (const { node, result } of results) if (!result.result?.ok) failed.push({ node, phase: "enable", detail: balancerFailure(result) });
  };
  for (const all of batches(prepared, options.drain ? (options.batch ?? "1") : options.batch)) {
    const batch = options.drain ? await drainEach(all) : all;
    if (failed.length > options.maxFailures) {
      // Nodes drained in this batch go back into rotation on their old release.
      await enableEach(batch);
      stopped = overBudget();
      break;
    }
    if (batch.length === 0) continue;
    // One command for the whole role when every web node is in it: they all swap on the same message.
    const targets = batch.length === expected.length ? [web] : chunk(batch, 8).map((nodes) => ({ nodes }));
    const at = swapTime(batch.length, options.swapDelayMs);
    const results = await Promise.all(targets.map((target, i) => run("activate", { app: options.app, commit, sequence, at }, target, targets.length === 1 ? batch : chunk(batch, 8)[i]!, "activate")));
    for (const result of results) {
      failed.push(...failuresOf(result, "activate"));
      unknown.push(...result.missing);
      for (const node of result.nodes.filter((n) => n.state === "done")) {
        const outcome = node.result as { status?: string; previous?: string } | undefined;
        if (outcome?.status === "skipped") skipped.push(node.node);
        else {
          active.push(node.node);
          previousOf.set(node.node, outcome?.previous);
        }
      }
    }
    // Back into rotation whatever the swap did: a node whose probe failed swapped back to its previous release.
    if (options.drain) await enableEach(batch);
    if (failed.length > options.maxFailures) {
      stopped = overBudget();
      break;
    }
  }

  const rolledBack: string[] = [];
  if (stopped) {
    // Nodes this rollout switched go back to what they served before; nodes that did not answer
    // may have switched, and go back to the release that was desired before.
    const targetOf = (node: string) => previousOf.get(node) ?? (unknown.includes(node) ? previous?.commit : undefined);
    const byTarget = new Map<string, string[]>();
    for (const node of [...active, ...unknown]) {
      const to = targetOf(node);
      if (to && to !== commit) byTarget.set(to, [...(byTarget.get(to) ?? []), node]);
    }
    const rollbackSequence = Math.max(Date.now(), sequence + 1);
    for (const [to, nodes] of byTarget) {
      for (const group of chunk(nodes, 8)) {
        const result = await run("rollback", { app: options.app, to, sequence: rollbackSequence }, { nodes: group }, group, "rollback");
        rolledBack.push(...result.nodes.filter((n) => n.state === "done").map((n) => n.node));
      }
    }
    await restoreDesired(rollbackSequence);
  }
  return { ...base, prepared, active, skipped, failed, rolledBack, ...(stopped ? { stopped } : {}), ok: !stopped && failed.length === 0 && active.length + skipped.length > 0 };
}

/**
 * When a batch of nodes swaps: far enough ahead for the command to reach all of them (SNS fans
 * out in well under a second), close enough not to slow the release. Node clocks are kept by NTP.
 */
export function swapTime(nodes: number, delayMs?: number): string {
  return new Date(Date.now() + (delayMs ?? Math.min(3000, 200 + 10 * nodes))).toISOString();
}

/** Splits nodes into activation batches: `--batch 2` or `--batch 25%`; one batch when unset. */
export function batches(nodes: readonly string[], spec: string | undefined): string[][] {
  if (!spec) return nodes.length ? [[...nodes]] : [];
  const match = /^(\d+)(%?)$/.exec(spec.trim());
  if (!match || Number(match[1]) === 0) throw new ConfigError(`Invalid --batch: expected a number of nodes or a percentage like 25%, received ${JSON.stringify(spec)}`);
  const size = match[2] ? Math.max(1, Math.ceil((nodes.length * Math.min(100, Number(match[1]))) / 100)) : Number(match[1]);
  return chunk(nodes, size);
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export interface RollbackOptions {
  app: string;
  to?: string | undefined;
  wait: boolean;
  timeoutSeconds: number;
  onProgress?: (nodes: NodeProgress[]) => void;
}

export interface RollbackResult {
  app: string;
  to: string;
  commandId: string;
  result?: FollowResult;
}

/**
 * Swaps every web node of an app back to a kept release, with no fetch: `to`, or the release
 * that was desired before the current one. The desired release follows, so a node that boots
 * later syncs to the rolled-back release.
 */
export async function rollbackApp(ctx: Issuer, options: RollbackOptions): Promise<RollbackResult> {
  const records = desiredReleases(ctx);
  const desired = await records.read(options.app);
  if (!desired) throw new ConfigError(`App ${options.app} has no release to roll back from (no ${stateKeys.release(options.app)})`);
  const to = options.to ?? desired.previous;
  if (!to) throw new ConfigError(`App ${options.app} has no previous release recorded; pass --to COMMIT`);
  if (!commitPattern.test(to)) throw new ConfigError(`Invalid --to: expected a full 40-character commit id, received ${JSON.stringify(to)}`);
  const sequence = Math.max(Date.now(), desired.sequence + 1);
  const { written } = await records.record(options.app, (current) => ({ ...(current ?? desired), commit: to, sequence, previous: (current ?? desired).commit, rollback: true, publishedAt: new Date().toISOString(), issuer: ctx.signer().keyId }));
  if (!written) throw new CommandFailedError(`A newer release of ${options.app} was recorded meanwhile; roll back from that one`);
  const envelope = createMessage(ctx.signer(), {
    kind: "command",
    type: "rollback",
    payload: { app: options.app, to, sequence },
    target: web,
    ttlSeconds: ctx.settings.commandTtlSeconds,
  });
  const bus = new Bus({ clients: ctx.clients }, { topicArn: await ctx.topicArn() });
  if (!options.wait) {
    await bus.publish(envelope);
    return { app: options.app, to, commandId: envelope.id };
  }
  const expected = await expectedNodes(ctx, web);
  const result = await publishAndFollow(ctx, bus, envelope, expected, options.timeoutSeconds * 1000, options.onProgress);
  return { app: options.app, to, commandId: envelope.id, result };
}

/** What the balancers said about a drain or an enable that did not succeed everywhere. */
function balancerFailure(result: SendResult): string {
  const nodes = result.result?.nodes ?? [];
  if (nodes.length === 0) return "no balancer answered (is a balancer node up?)";
  return nodes
    .filter((n) => n.state !== "done")
    .map((n) => `${n.node}: ${n.detail ?? n.state}`)
    .join("; ");
}
