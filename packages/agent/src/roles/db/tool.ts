import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { BosunError, type Logger } from "@bosun/core";

/** A database tool (mariadb-dump, mariabackup, mbstream, the mariadb client) failed. */
export class ToolError extends BosunError {}

export interface ToolRun {
  child: ChildProcessWithoutNullStreams;
  stdin: Writable;
  stdout: Readable;
  /** Resolves when the tool exits 0; rejects naming the tool, its exit and the last lines it printed on stderr. */
  done: Promise<void>;
  /** Every line the tool printed on stderr, so far. */
  stderr: string[];
}

/**
 * Runs a database tool with an argument array (never a shell string), its stderr lines into the
 * log, and the agent's abort signal: an abort kills it, and `done` rejects. Passwords reach tools
 * through an options file, never argv or the environment.
 */
export function runTool(argv: readonly string[], options: { log: Logger; signal?: AbortSignal; cwd?: string; env?: NodeJS.ProcessEnv }): ToolRun {
  const [file, ...args] = argv;
  const child = spawn(file!, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on("line", (line) => {
    stderr.push(line);
    if (stderr.length > 200) stderr.shift();
    options.log.debug({ tool: file, line: line.slice(0, 2000) }, "tool output");
  });
  const onAbort = () => child.kill("SIGKILL");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const done = new Promise<void>((resolve, reject) => {
    child.once("error", (error) => reject(new ToolError("TOOL_FAILED", `${file} could not start: ${error.message}`, { cause: error })));
    child.once("close", (code, signal) => {
      options.signal?.removeEventListener("abort", onAbort);
      if (code === 0) return resolve();
      const why = options.signal?.aborted ? "was stopped" : signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const tail = stderr.filter((l) => l.trim()).slice(-3).join(" | ");
      reject(new ToolError("TOOL_FAILED", `${file} ${why}${tail ? `: ${tail}` : ""}`));
    });
  });
  // A consumer that stops reading (a failed upload) must not leave the tool blocked on a full pipe.
  child.stdin.on("error", () => undefined);
  return { child, stdin: child.stdin, stdout: child.stdout, done, stderr };
}

/** Runs a tool to its end and returns what it printed on stdout. */
export async function toolOutput(argv: readonly string[], options: { log: Logger; signal?: AbortSignal }): Promise<string> {
  const run = runTool(argv, options);
  run.stdin.end();
  const out: Buffer[] = [];
  run.stdout.on("data", (chunk: Buffer) => out.push(chunk));
  await run.done;
  return Buffer.concat(out).toString("utf8");
}
