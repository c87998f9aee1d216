import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface, type Interface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { LoadStats } from "./load-worker.ts";

const workerScript = fileURLToPath(new URL("./load-worker.ts", import.meta.url));

/** A load-worker process aimed at one URL on 127.0.0.1: started, then stopped for its counts. */
export class LoadProcess {
  readonly #child: ChildProcess;
  readonly #exited: Promise<unknown>;
  readonly #lines: string[] = [];
  readonly #stderr: string[] = [];
  readonly #stdout: Interface;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.#exited = once(child, "exit");
    this.#stdout = createInterface({ input: child.stdout! }).on("line", (line) => this.#lines.push(line));
    createInterface({ input: child.stderr! }).on("line", (line) => this.#stderr.push(line));
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Starts the load and resolves once the site has served a known page to it. */
  static async start(options: { url: string; pageFiles: readonly string[]; connections: number; maxSeconds: number }): Promise<LoadProcess> {
    const url = new URL(options.url);
    if (url.hostname !== "127.0.0.1") throw new Error(`load goes to 127.0.0.1 only, not ${url.hostname}`);
    const child = spawn(process.execPath, [workerScript, options.url, String(options.connections), String(options.maxSeconds), ...options.pageFiles], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const load = new LoadProcess(child);
    try {
      await load.#waitFor((line) => line === "ready", 15_000, "ready");
    } catch (error) {
      await load.kill();
      throw error;
    }
    return load;
  }

  /** Ends the load (its stdin closes) and returns what it counted. */
  async stop(): Promise<LoadStats> {
    this.#child.stdin!.end();
    const counts = await this.#waitFor((line) => line.startsWith("{"), 15_000, "its counts");
    await this.#exited;
    return JSON.parse(counts) as LoadStats;
  }

  async kill(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill("SIGKILL");
    await this.#exited;
  }

  /** The first line that matches, as it arrives; fails if stdout closes first or the time runs out. */
  #waitFor(match: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const seen = this.#lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const settle = (outcome: () => void) => {
        clearTimeout(timer);
        this.#stdout.off("line", onLine).off("close", onClose);
        outcome();
      };
      const onLine = (line: string) => match(line) && settle(() => resolve(line));
      const onClose = () => settle(() => reject(new Error(`load worker ended before ${what}: ${this.#stderr.join(" ")}`)));
      const timer = setTimeout(() => settle(() => reject(new Error(`load worker: no ${what} after ${timeoutMs} ms`))), timeoutMs);
      this.#stdout.on("line", onLine).on("close", onClose);
    });
  }
}
