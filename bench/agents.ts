import { join } from "node:path";
import { terminalEvents, type Envelope } from "@bosun/core";
import type { TestFleet, TestProcess } from "../test/helpers/fleet.ts";
import { spawnBosun } from "../packages/cli/src/children.ts";
import type { ReleaseResult } from "../packages/cli/src/commands/release.ts";
import type { Cleanup } from "./harness.ts";

/** Web agents named web-01, web-02, …: started in parallel batches (many at once on 2 cores time out) until there are `count`. */
export async function growFleet(
  fleet: TestFleet,
  agents: TestProcess[],
  count: number,
  batchSize: number,
  envFor: (nodeId: string) => Record<string, string> = () => ({}),
): Promise<void> {
  while (agents.length < count) {
    const first = agents.length + 1;
    const ids = Array.from({ length: Math.min(batchSize, count - agents.length) }, (_, i) => `web-${String(first + i).padStart(2, "0")}`);
    agents.push(...(await Promise.all(ids.map((id) => fleet.startAgent(id, ["web"], envFor(id))))));
  }
}

export function pidsOf(processes: readonly TestProcess[]): number[] {
  return processes.flatMap((p) => (p.child.pid === undefined ? [] : [p.child.pid]));
}

/** The app every release benchmark deploys, and where each node keeps it. */
export const app = "demo";

export function deployRoot(fleet: TestFleet, nodeId: string): string {
  return join(fleet.dir, "www", nodeId, app);
}

/** BOSUN_APPS for a node: its own deploy root, the benchmark's repositories, no build and no health check. */
export function webAppEnv(fleet: TestFleet, repos: readonly string[]): (nodeId: string) => Record<string, string> {
  return (nodeId) => ({ BOSUN_APPS: JSON.stringify({ [app]: { root: deployRoot(fleet, nodeId), repos } }) });
}

export function nodeOf(event: Envelope): string {
  return (event.payload as { node: { id: string } }).node.id;
}

/** The event that ended a command on a node; a `failed` or `refused` one throws with what the node said. */
export async function doneOn(fleet: TestFleet, commandId: string, nodeId: string, timeoutMs: number): Promise<Envelope> {
  const event = await fleet.waitForEvent(
    (e) => e.correlationId === commandId && terminalEvents.includes(e.type as never) && nodeOf(e) === nodeId,
    `the end of ${commandId} on ${nodeId}`,
    timeoutMs,
  );
  if (event.type !== "done") throw new Error(`${nodeId} answered ${event.type}: ${JSON.stringify(event.payload)}`);
  return event;
}

export interface CliRelease {
  /** From spawning `bosun release` until it exited. */
  ms: number;
  /** Date.now() when it was spawned, to compare with the nodes' event times. */
  startedWall: number;
  result: ReleaseResult;
}

/**
 * `bosun release --app demo --ref main --repo DIR --wait --json`, timed from spawn to exit; throws
 * unless every node ends active. The CLI process is stopped with the rest if the run is cut short.
 */
export async function releaseWithCli(fleet: TestFleet, cleanup: Cleanup, repo: string, nodes: number, timeoutSeconds: number): Promise<CliRelease> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const startedWall = Date.now();
  const started = performance.now();
  const cli = spawnBosun({
    name: "bosun release",
    args: ["release", "--app", app, "--ref", "main", "--repo", repo, "--wait", "--json", "--timeout", String(timeoutSeconds)],
    env: fleet.env(),
    onLine: (line, stream) => (stream === "stdout" ? stdout : stderr).push(line),
  });
  const stop = cleanup.add("bosun release", () => cli.stop(5_000));
  const { code } = await cli.exited;
  const ms = performance.now() - started;
  await stop();
  // Let readline hand over the last lines.
  await new Promise((r) => setImmediate(r));
  const text = stdout.join("\n");
  const result = text.startsWith("{") ? (JSON.parse(text) as ReleaseResult) : undefined;
  if (code !== 0 || !result?.ok || result.active?.length !== nodes) {
    throw new Error(`bosun release exited with ${code}, ${result?.active?.length ?? 0} of ${nodes} node(s) active: ${(text || stderr.join("\n")).slice(0, 2000)}`);
  }
  return { ms, startedWall, result };
}

/**
 * A web agent that starts after a release was published brings its app to that release on its
 * own (fetch, checkout, swap) once subscribed. Waits until each has said it did, so nothing
 * else writes to their deploy roots while a measurement runs; a node that says it could not, fails.
 */
export async function awaitReconciled(agents: readonly TestProcess[], timeoutMs: number): Promise<void> {
  const done = "app checked against its desired release after subscribing";
  const failed = "could not bring app to its desired release after subscribing";
  await Promise.all(
    agents.map(async (agent) => {
      const record = await agent.waitForLog((r) => r.msg === done || r.msg === failed, "its app at the desired release", timeoutMs);
      if (record.msg === failed) throw new Error(`${agent.name}: ${failed}: ${JSON.stringify(record["err"] ?? record)}`);
    }),
  );
}
