import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { BackendState, BalancerSettings, Logger } from "@bosun/core";
import { HaproxyError, RuntimeApi } from "./runtime.ts";

const run = promisify(execFile);

/** The path HAProxy answers itself with 200 while it runs: the other balancer of a pair checks it. */
export const MONITOR_PATH = "/.bosun-lb";

/** A server as the config file holds it. */
export interface ServerLine {
  name: string;
  /** host:port as HAProxy takes it ([v6]:port for IPv6). */
  address: string;
  state: BackendState;
}

/** The files of one balancer's HAProxy, all under one directory. */
export function haproxyPaths(dir: string) {
  return {
    dir,
    config: join(dir, "haproxy.cfg"),
    socket: join(dir, "admin.sock"),
    serverState: join(dir, "server-state"),
    pid: join(dir, "haproxy.pid"),
  };
}

/** The check options of every web node's server line, in the config and in `add server` alike. */
export function checkOptions(check: BalancerSettings["check"]): string[] {
  return ["check", "inter", String(check.interMs), "fall", String(check.fall), "rise", String(check.rise)];
}

/** Server options that mirror an operator's state: maintenance starts disabled, a drain with no weight. */
function stateOptions(state: BackendState): string[] {
  return state === "maint" ? ["disabled"] : state === "drain" ? ["weight", "0"] : [];
}

/**
 * haproxy.cfg for a balancer: one frontend, one backend of web nodes with HAProxy's own active
 * checks, an admin runtime socket (servers are added and removed through it, without reloads),
 * and a server-state file, so a reload or a restart keeps each server's state.
 */
export function renderConfig(settings: BalancerSettings, dir: string, servers: readonly ServerLine[]): string {
  const paths = haproxyPaths(dir);
  const bind = settings.listen.host.includes(":") ? `[${settings.listen.host}]:${settings.listen.port}` : `${settings.listen.host}:${settings.listen.port}`;
  return `# Written by the Bosun balancer agent. It changes servers through the runtime API and mirrors each change here.
global
  stats socket ${paths.socket} mode 600 level admin
  server-state-file ${paths.serverState}

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  load-server-state-from-file global
  # A node that died between checks: its requests go to another one.
  option redispatch
  retries 3

frontend bosun-in
  bind ${bind}
  # Answered by HAProxy itself, whatever the web nodes: the other balancer of a pair checks this one here.
  monitor-uri ${MONITOR_PATH}
  default_backend ${settings.backend}

backend ${settings.backend}
  balance roundrobin
  option httpchk GET ${settings.check.path}
${servers.map((s) => `  server ${[s.name, s.address, ...checkOptions(settings.check), ...stateOptions(s.state)].join(" ")}`).join("\n")}
`;
}

/**
 * HAProxy run by the agent in master-worker mode (-W): started with the current config, reloaded
 * (SIGUSR2 to the master, after `haproxy -c`) only when the runtime socket is gone, and stopped
 * when the agent stops.
 */
export class HaproxyProcess {
  readonly paths: ReturnType<typeof haproxyPaths>;
  readonly runtime: RuntimeApi;
  readonly #program: string;
  readonly #log: Logger;
  #child: ChildProcess | undefined;
  /** Called when the HAProxy this object runs exits without being told to (a crash, a kill). */
  onUnexpectedExit: ((how: string) => void) | undefined;

  constructor(deps: { logger: Logger }, options: { program: string; dir: string }) {
    this.paths = haproxyPaths(options.dir);
    this.runtime = new RuntimeApi({ socket: this.paths.socket });
    this.#program = options.program;
    this.#log = deps.logger;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Checks a config with `haproxy -c`; the error names what HAProxy found wrong. */
  async validate(file: string): Promise<void> {
    try {
      await run(this.#program, ["-c", "-q", "-f", file]);
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? (error as Error).message;
      throw new HaproxyError("HAPROXY_CONFIG_INVALID", `haproxy -c refused the rendered config: ${stderr.trim().split("\n").slice(0, 3).join(" / ")}`, { cause: error });
    }
  }

  /** Writes a config only once HAProxy has checked it: a config that fails `haproxy -c` is never put in place. */
  async writeConfig(text: string): Promise<void> {
    const next = `${this.paths.config}.next`;
    await writeFile(next, text);
    await this.validate(next);
    await rename(next, this.paths.config);
  }

  /** Saves HAProxy's view of its servers where it reads it back after a reload or restart. */
  async saveServerState(): Promise<void> {
    const state = await this.runtime.send("show servers state");
    const next = `${this.paths.serverState}.next`;
    await writeFile(next, state);
    await rename(next, this.paths.serverState);
  }

  /** Starts HAProxy on the config in place and returns once its runtime socket answers. */
  async start(signal: AbortSignal, timeoutMs = 15_000, options: { leftover: "stop" | "keep" } = { leftover: "stop" }): Promise<void> {
    if (options.leftover === "stop") await this.#stopLeftover();
    const child = spawn(this.#program, ["-W", "-db", "-f", this.paths.config, "-p", this.paths.pid], { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    let ready = false;
    child.once("exit", (code, exitSignal) => {
      // stop() and handover() let go of the child before they signal it: only an exit nobody asked for, after a good start, is news.
      if (this.#child !== child || !ready) return;
      this.#child = undefined;
      this.onUnexpectedExit?.(`haproxy (pid ${child.pid}) exited with ${code ?? exitSignal}`);
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding("utf8").on("data", (text: string) => {
        for (const line of text.split("\n")) if (line.trim()) this.#log.info({ haproxy: line.trim() }, "haproxy");
      });
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new HaproxyError("HAPROXY_EXITED", `haproxy exited with ${child.exitCode ?? child.signalCode} at start; see the agent's log`);
      try {
        await this.runtime.pid();
        ready = true;
        this.#log.info({ pid: child.pid, config: this.paths.config }, "haproxy started");
        return;
      } catch (error) {
        if (signal.aborted || Date.now() > deadline) {
          await this.stop();
          throw new HaproxyError("HAPROXY_START", `haproxy did not answer on ${this.paths.socket} within ${timeoutMs} ms`, { cause: error });
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /**
   * A new HAProxy on the config in place, beside the running one (both bind the port with
   * SO_REUSEPORT), then the old one soft-stopped: it stops listening and lets its sessions finish.
   * Used when the runtime socket is gone: a reload through the master would hand the new worker
   * the same, unreachable socket. Returns the new worker's pid.
   */
  async handover(signal: AbortSignal): Promise<number> {
    const old = this.#child;
    this.#child = undefined;
    await this.validate(this.paths.config);
    await this.start(signal, 15_000, { leftover: "keep" });
    if (old) await stopChild(old, 5000);
    return this.runtime.pid();
  }

  /** Stops HAProxy: a soft stop (sessions finish) first, then SIGTERM and SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 5000): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child) await stopChild(child, timeoutMs);
  }

  /** An HAProxy a killed agent left running on this directory (its pid file, checked to be haproxy on our config). */
  async #stopLeftover(): Promise<void> {
    const pid = Number.parseInt(await readFile(this.paths.pid, "utf8").catch(() => ""), 10);
    if (!(pid > 0)) return;
    const command = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (!command.includes("haproxy") || !command.includes(this.paths.config)) return;
    this.#log.warn({ pid }, "stopping an haproxy an earlier run of this agent left running");
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    process.kill(pid, "SIGTERM");
    const deadline = Date.now() + 10_000;
    while (alive()) {
      if (Date.now() > deadline) process.kill(pid, "SIGKILL");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** SIGUSR1 (HAProxy's soft stop), then SIGTERM and SIGKILL if it takes longer than `timeoutMs`. */
async function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGUSR1");
  const term = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
  const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs * 2);
  await exited;
  clearTimeout(term);
  clearTimeout(kill);
}
