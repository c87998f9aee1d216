import type { TestFleet } from "../test/helpers/fleet.ts";
import { swapTime } from "@bosun/coordinator";
import { app, doneOn } from "./agents.ts";
import { inTurn, verdictOf, type Verdict } from "./harness.ts";
import type { RawBaseline } from "./raw-baseline.ts";
import { formatMs, median, round, summarize, type Summary } from "./stats.ts";

export const spreadTarget = { p99Ms: 100 } as const;

export interface SpreadOptions {
  rounds: number;
  warmup: number;
  timeoutMs: number;
}

export interface SpreadRow {
  agents: number;
  rounds: number;
  /** First to last node's swap in one `activate` to the web role (each node's `swappedAt`). */
  bosun: Summary;
  /** First to last plain SQS consumer having one raw SNS publish in hand. */
  raw: Summary;
  ratio: { p50: number; p99: number };
  /** Publish until the last node's `done` reached this process. */
  bosunPublishToLastDoneMs: Summary;
  /** Over rounds: the spread of the nodes' acks, and each round's median and slowest ack→swap. */
  breakdown: { ackSpreadMs: Summary; ackToSwapMedianMs: Summary; ackToSwapMaxMs: Summary };
  target: Verdict;
  samplesMs: { bosun: number[]; raw: number[] };
}

/** One activation round, from what the nodes reported (their wall clocks, 1 ms resolution). */
interface SpreadRound {
  spreadMs: number;
  /** First to last node signing its ack: how far apart the nodes took the command in. */
  ackSpreadMs: number;
  /** From a node's ack to its swap (including the wait for the named moment), median and slowest over nodes. */
  ackToSwapMedianMs: number;
  ackToSwapMaxMs: number;
  lastDoneMs: number;
}

/**
 * One activate to every web node, naming the moment to swap exactly as `bosun release` does
 * (swapTime); the spread of their swap times, and where it came from.
 */
async function activationSpread(fleet: TestFleet, nodes: readonly string[], commit: string, sequence: number, timeoutMs: number): Promise<SpreadRound> {
  const command = fleet.command("activate", { app, commit, sequence, at: swapTime(nodes.length) }, { roles: ["web"] });
  const started = performance.now();
  const [dones] = await Promise.all([Promise.all(nodes.map((id) => doneOn(fleet, command.id, id, timeoutMs))), fleet.publish(command)]);
  const lastDoneMs = performance.now() - started;
  const acks = await Promise.all(nodes.map((id) => fleet.waitForNodeEvent(command.id, id, "ack", timeoutMs)));
  const ackSigned = acks.map((ack) => Date.parse(ack.issuedAt));
  const swappedAt = dones.map((done) => {
    const result = (done.payload as { result?: { status?: string; swappedAt?: number } }).result;
    if (result?.status !== "active" || typeof result.swappedAt !== "number") throw new Error(`activate did not swap: ${JSON.stringify(done.payload)}`);
    return result.swappedAt;
  });
  const ackToSwap = swappedAt.map((at, i) => at - ackSigned[i]!);
  return {
    spreadMs: Math.max(...swappedAt) - Math.min(...swappedAt),
    ackSpreadMs: Math.max(...ackSigned) - Math.min(...ackSigned),
    ackToSwapMedianMs: median(ackToSwap),
    ackToSwapMaxMs: Math.max(...ackToSwap),
    lastDoneMs,
  };
}

/**
 * Activations of the first `n` nodes, alternating between two releases they all hold, beside
 * the receipt spread of a raw SNS publish across `n` plain SQS consumers; the two kinds of
 * round take turns going first, so neither always runs in the other's tail.
 */
export async function measureSpread(fleet: TestFleet, raw: RawBaseline, nodes: readonly string[], prepared: readonly [string, string], options: SpreadOptions): Promise<SpreadRow> {
  await raw.growTo(nodes.length, 10);
  let sequence = Date.now();
  const bosun: SpreadRound[] = [];
  const rawSpread: number[] = [];
  for (let i = 0; i < options.warmup + options.rounds; i++) {
    const activate = () => activationSpread(fleet, nodes, prepared[i % 2]!, ++sequence, options.timeoutMs);
    const fanOut = async () => (await raw.fanOut(options.timeoutMs)).receiptSpreadMs;
    const [b, r] = await inTurn(i, activate, fanOut);
    if (i < options.warmup) continue;
    bosun.push(b);
    rawSpread.push(r);
  }
  const bosunSummary = summarize(bosun.map((b) => b.spreadMs));
  const rawSummary = summarize(rawSpread);
  // A raw spread of 0 ms (all within one wall-clock ms) leaves no ratio to speak of.
  const ratio = (a: number, b: number) => (b > 0 ? round(a / b, 2) : Number.NaN);
  return {
    agents: nodes.length,
    rounds: options.rounds,
    bosun: bosunSummary,
    raw: rawSummary,
    ratio: { p50: ratio(bosunSummary.p50, rawSummary.p50), p99: ratio(bosunSummary.p99, rawSummary.p99) },
    bosunPublishToLastDoneMs: summarize(bosun.map((b) => b.lastDoneMs)),
    breakdown: {
      ackSpreadMs: summarize(bosun.map((b) => b.ackSpreadMs)),
      ackToSwapMedianMs: summarize(bosun.map((b) => b.ackToSwapMedianMs)),
      ackToSwapMaxMs: summarize(bosun.map((b) => b.ackToSwapMaxMs)),
    },
    target: verdictOf(bosunSummary.p99 < spreadTarget.p99Ms ? [] : [`p99 ${formatMs(bosunSummary.p99)} >= ${spreadTarget.p99Ms} ms`]),
    samplesMs: { bosun: bosun.map((b) => b.spreadMs), raw: rawSpread },
  };
}
