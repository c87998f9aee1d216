import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Logger } from "@bosun/core";

export type BuildResult = { ok: true; durationMs: number } | { ok: false; error: string; code: "BUILD_FAILED" | "BUILD_TIMEOUT" | "BUILD_ABORTED" };

/**
 * Runs an app's build command in a prepared release: an argument array (never a shell
 * string), a time limit, the agent's abort signal, and every output line into the log.
 */
export async function runBuild(command: readonly string[], options: { cwd: string; timeoutSeconds: number; signal: AbortSignal; log: Logger; env?: NodeJS.ProcessEnv }): Promise<BuildResult> {
  const started = performance.now();
  const [file, ...args] = command;
  const child = spawn(file!, args, { cwd: options.cwd, env: options.env ?? buildEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true });
  for (const stream of ["stdout", "stderr"] as const) {
    createInterface({ input: child[stream] }).on("line", (line) => options.log.info({ stream, line: line.slice(0, 2000) }, "build output"));
  }
  let why: "BUILD_TIMEOUT" | "BUILD_ABORTED" | undefined;
  // The build may start children of its own: signal the whole process group.
  const kill = (reason: "BUILD_TIMEOUT" | "BUILD_ABORTED") => {
    why ??= reason;
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
  };
  const timer = setTimeout(() => kill("BUILD_TIMEOUT"), options.timeoutSeconds * 1000);
  const onAbort = () => kill("BUILD_ABORTED");
  options.signal.addEventListener("abort", onAbort, { once: true });
  const exit = await new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.once("error", (error) => resolve({ code: null, error }));
    child.once("close", (code) => resolve({ code }));
  });
  clearTimeout(timer);
  options.signal.removeEventListener("abort", onAbort);
  const durationMs = Math.round(performance.now() - started);
  if (why === "BUILD_TIMEOUT") return { ok: false, code: why, error: `build ${JSON.stringify(command)} did not finish within ${options.timeoutSeconds}s and was killed` };
  if (why === "BUILD_ABORTED") return { ok: false, code: why, error: "build was interrupted by agent stop" };
  if (exit.error) return { ok: false, code: "BUILD_FAILED", error: `build ${JSON.stringify(command)} could not start: ${exit.error.message}` };
  if (exit.code !== 0) return { ok: false, code: "BUILD_FAILED", error: `build ${JSON.stringify(command)} exited with code ${exit.code}` };
  return { ok: true, durationMs };
}

/** Builds run the repository's code: they get a plain environment, not the agent's settings or AWS credentials. */
function buildEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const key of ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"]) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}
