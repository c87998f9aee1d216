/**
 * What every benchmark shares: option checks, progress lines on stderr, cleanup that runs
 * however the run ends (error, SIGINT, SIGTERM), the report file and the machine it ran on.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { round } from "./stats.ts";

export class UsageError extends Error {
  readonly code = "BENCH_USAGE";
}

/** The options every benchmark takes: --quick, --output PATH, --check (exit 1 on a missed target). */
const commonOptions = {
  quick: { type: "boolean", default: false },
  output: { type: "string" },
  check: { type: "boolean", default: false },
} as const;

export interface CommonOptions {
  mode: "full" | "quick";
  /** The results file. */
  output: string;
  check: boolean;
}

/** Parses a benchmark's command line: the common options and its own, strictly (an unknown option is an error). */
export function parseBenchArgs<T extends ParseArgsOptionsConfig>(argv: readonly string[], options: T) {
  return parseArgs({ args: [...argv], options: { ...commonOptions, ...options }, strict: true }).values;
}

export function positiveInt(option: string, text: string, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new UsageError(`--${option} must be a whole number from 1 to ${max}, received ${JSON.stringify(text)}`);
  }
  return value;
}

/** A comma-separated list of increasing whole numbers, like `1,10,50` (fleets grow between rows). */
export function increasingInts(option: string, text: string, max: number): number[] {
  const values = text.split(",").map((part) => positiveInt(option, part.trim(), max));
  if (values.some((n, i) => i > 0 && n <= values[i - 1]!)) {
    throw new UsageError(`--${option} must be increasing (agents are added between rows), received ${JSON.stringify(text)}`);
  }
  return values;
}

/** Whether a target was met, and if not, by how much. */
export interface Verdict {
  met: boolean;
  why: string;
}

export function verdictOf(misses: readonly string[]): Verdict {
  return { met: misses.length === 0, why: misses.length === 0 ? "yes" : `no: ${misses.join(", ")}` };
}

/**
 * Runs two measurements one after the other: `a` first in even rounds, `b` first in odd ones,
 * so neither always runs in the other's tail.
 */
export async function inTurn<A, B>(round: number, a: () => Promise<A>, b: () => Promise<B>): Promise<[A, B]> {
  if (round % 2 === 0) {
    const first = await a();
    return [first, await b()];
  }
  const first = await b();
  return [await a(), first];
}

const began = performance.now();
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export function progress(text: string): void {
  process.stderr.write(`[${((performance.now() - began) / 1000).toFixed(1).padStart(6)} s] ${text}\n`);
}

/** Seconds since this process loaded the harness. */
export function wallSeconds(): number {
  return round((performance.now() - began) / 1000);
}

export function formatWall(seconds: number): string {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m ${(seconds - minutes * 60).toFixed(0)}s`;
}

export interface Machine {
  cpus: number;
  cpuModel: string;
  totalMemoryMb: number;
  node: string;
  platform: string;
}

export function machine(): Machine {
  const cpu = cpus();
  return {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model.trim() ?? "unknown",
    totalMemoryMb: Math.round(totalmem() / 2 ** 20),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

/** Peak resident memory of this process so far. */
export function benchPeakRssMb(): number {
  return round(process.resourceUsage().maxRSS / 1024);
}

export function describeError(error: unknown): string {
  if (error instanceof AggregateError) return [error.message, ...error.errors.map((e) => `  ${describeError(e)}`)].join("\n");
  if (error instanceof Error) return error.cause === undefined ? error.message : `${error.message} (cause: ${describeError(error.cause)})`;
  return String(error);
}

/** Indented JSON, with each list of numbers on one line so the file reads as a report. */
export function toJson(report: unknown): string {
  const text = JSON.stringify(report, null, 2).replace(/\[\s+([-\d.,\s]+?)\s+\]/g, (_, inner: string) => `[${inner.replace(/,\s+/g, ", ")}]`);
  return `${text}\n`;
}

/**
 * What a run started and must stop. Steps run last-added first, each one even when another
 * fails; `close()` is safe to call twice. `add` returns a function that runs its step early
 * (for what one measurement needs and the next does not), after which close() skips it.
 */
export class Cleanup {
  #steps: { name: string; run: () => Promise<unknown> }[] = [];
  #closing: Promise<void> | undefined;

  add(name: string, run: () => Promise<unknown>): () => Promise<void> {
    const step = { name, run };
    this.#steps.push(step);
    return async () => {
      const at = this.#steps.indexOf(step);
      if (at === -1) return;
      this.#steps.splice(at, 1);
      await run();
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      const errors: unknown[] = [];
      for (const step of this.#steps.splice(0).reverse()) {
        await step.run().catch((error: unknown) => errors.push(new Error(`${step.name}: ${describeError(error)}`)));
      }
      if (errors.length > 0) throw new AggregateError(errors, "could not stop everything the benchmark started");
    })();
    return this.#closing;
  }
}

/** What every report carries, for the lines under its tables. */
export interface ReportBase {
  benchProcessPeakRssMb: number;
  wallSeconds: number;
}

export interface BenchmarkSpec<O extends CommonOptions, R extends ReportBase> {
  parse(argv: readonly string[]): O;
  run(options: O, cleanup: Cleanup): Promise<R>;
  /** The tables; the peak RSS of this process, the wall time and the results path follow. */
  render(report: R): string;
  /** What runs inside the benchmark process, beside the measuring, for the peak RSS line. */
  hosts: string;
  /** Whether the report misses a target; with --check that makes the exit code 1. */
  missed(report: R): boolean;
  /** What a signal stops, for the progress line. */
  stopping: string;
}

/**
 * Runs a benchmark from its entry point: options, then the run with everything it started
 * registered for cleanup, the report written, everything stopped, then the tables printed.
 * Returns the exit code: 0, 1 (failed, or a missed target with --check), 2 (bad options).
 */
export async function runBenchmark<O extends CommonOptions, R extends ReportBase>(spec: BenchmarkSpec<O, R>, argv: readonly string[]): Promise<number> {
  let options: O;
  try {
    options = spec.parse(argv);
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    return 2;
  }
  const cleanup = new Cleanup();
  let interrupted = false;
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.once(signal, () => {
      interrupted = true;
      progress(`${signal}: stopping ${spec.stopping}`);
      cleanup
        .close()
        .catch((error: unknown) => process.stderr.write(`${describeError(error)}\n`))
        .finally(() => process.exit(code));
    });
  }
  let report: R;
  try {
    report = await spec.run(options, cleanup);
    await mkdir(dirname(options.output), { recursive: true });
    await writeFile(options.output, toJson(report));
  } catch (error) {
    // After a signal, whatever was under way fails as its processes go; that is not news.
    if (!interrupted) process.stderr.write(`benchmark failed: ${describeError(error)}\n`);
    await cleanup.close().catch((e: unknown) => process.stderr.write(`${describeError(e)}\n`));
    return 1;
  }
  progress("measurements done; stopping everything");
  try {
    await cleanup.close();
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    return 1;
  }
  process.stdout.write(
    [
      spec.render(report),
      `benchmark process peak RSS (it hosts ${spec.hosts}): ${report.benchProcessPeakRssMb} MB`,
      `wall time: ${formatWall(report.wallSeconds)}`,
      `results: ${relative(repoRoot, options.output)}`,
      "",
    ].join("\n"),
  );
  return options.check && spec.missed(report) ? 1 : 0;
}
