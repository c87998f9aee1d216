import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Set in a child's environment when its stdin is its parent's lifeline. */
export const PARENT_PIPE = "BOSUN_PARENT_PIPE";

/**
 * The CLI's entry point, run by the same Node binary as this process: main.ts beside this
 * module in the sources; in the bundle (build/bundle.ts) this module is part of the entry point
 * itself, so the bundle runs itself.
 */
const here = fileURLToPath(import.meta.url);
export const mainScript = here.endsWith(".ts") ? fileURLToPath(new URL("./main.ts", import.meta.url)) : here;

/**
 * Node's flags for every Bosun process (bin/bosun passes the same). V8 sizes the young generation
 * from the machine's memory, and a process that streams gigabytes through it (a snapshot, a
 * restore) grew its heap reservation by 60 MB and more; 2 MiB semi-spaces keep the agent near
 * 200 MB however large the snapshot (bench/backup.ts), for a few more cheap scavenges.
 */
export const NODE_FLAGS: readonly string[] = ["--max-semi-space-size=2"];

export interface BosunProcess {
  name: string;
  child: ChildProcess;
  /** Resolves once the child has exited and its output has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL if it has not exited by the deadline. Resolves with how it exited. */
  stop(deadlineMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `bosun ARGS` as a child process (an argument array, never a shell string) and hands
 * each line it prints to `onLine`.
 */
export function spawnBosun(options: {
  name: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** The entry point to run instead of this one's (a built bundle's bosun.mjs, in its tests and benchmarks). */
  main?: string;
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
}): BosunProcess {
  // The child's stdin is a pipe from this process: when this process dies, however it dies, the
  // kernel closes it, and a long-running child (agent, coordinator, dev) stops on that end of file.
  const child = spawn(process.execPath, [...NODE_FLAGS, options.main ?? mainScript, ...options.args], {
    // Children share one compile cache, so each starts without stripping its TypeScript again.
    env: { NODE_COMPILE_CACHE: join(tmpdir(), "bosun-node-compile-cache"), ...options.env, [PARENT_PIPE]: "1" },
    cwd: options.cwd,
    stdio: ["pipe", "pipe", "pipe"],
  });
  for (const stream of ["stdout", "stderr"] as const) {
    createInterface({ input: child[stream]! }).on("line", (line) => options.onLine?.(line, stream));
  }
  // "close", not "exit": by then every line the child printed has been handed to onLine.
  const exited = once(child, "close").then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  return {
    name: options.name,
    child,
    exited,
    async stop(deadlineMs = 30_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), deadlineMs);
        try {
          return await exited;
        } finally {
          clearTimeout(timer);
        }
      }
      return exited;
    },
  };
}
