import { randomUUID } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { BosunError, errorMessage, type BackendHealth, type BackendState, type BalancerReport, type BalancerSettings, type EventPayload, type Logger, type NodeRef } from "@bosun/core";
import { abortableDelay } from "@bosun/aws";
import type { EventSink } from "../../pipeline.ts";
import { applyFact, desiredServers, planServers, type WebFact } from "./backends.ts";
import { checkOptions, HaproxyProcess, renderConfig, type ServerLine } from "./haproxy.ts";
import { HaproxyError, runtimeCommand, type ServerStat } from "./runtime.ts";

/** How long at least between two starts of an HAProxy that keeps dying. */
const RESTART_PAUSE_MS = 5000;

/** A balancer command that cannot be carried out as asked (an unknown node); `code` goes in the failed event. */
export class BalancerError extends BosunError {}

export interface DrainResult {
  node: string;
  /** True when its sessions finished; false when the drain timeout passed first (or it left the fleet). */
  drained: boolean;
  sessionsLeft: number;
  waitedMs: number;
  state: BackendState;
}

/** HAProxy's status text as a health verdict; servers in maintenance are not checked. */
export function healthOf(status: string): BackendHealth {
  const s = status.toUpperCase();
  if (s.startsWith("MAINT") || s === "NO CHECK" || s === "") return "unchecked";
  if (s.startsWith("DOWN")) return "down";
  return "up";
}

/** The server lines a config this agent wrote holds, so a restarted agent keeps an operator's drain or maintenance. */
export function parseServerLines(config: string): ServerLine[] {
  const lines: ServerLine[] = [];
  for (const match of config.matchAll(/^ {2}server (\S+) (\S+) (.*)$/gm)) {
    const rest = match[3]!;
    const state: BackendState = / disabled\b|^disabled\b/.test(rest) ? "maint" : / weight 0\b/.test(rest) ? "drain" : "ready";
    lines.push({ name: match[1]!, address: match[2]!, state });
  }
  return lines;
}

/**
 * One balancer node's HAProxy, kept in step with the fleet's web nodes: facts about web nodes
 * come in (events, the fleet record), are gathered for `debounceMs`, and applied as one update
 * through the runtime API (no reload), mirrored into haproxy.cfg and the server-state file.
 * Updates and operators' state changes run one at a time.
 */
export class Balancer {
  readonly haproxy: HaproxyProcess;
  readonly #settings: BalancerSettings;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #events: EventSink;
  readonly #node: NodeRef;
  readonly #facts = new Map<string, WebFact>();
  /** HAProxy's servers as this agent made them: name → address and operator state. */
  readonly #servers = new Map<string, { address: string; state: BackendState }>();
  #stats = new Map<string, ServerStat>();
  readonly #health = new Map<string, BackendHealth>();
  #work: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #pendingSince: number | undefined;
  #started = false;
  #closed = false;
  readonly #abort = new AbortController();
  #restartedAt: number | undefined;
  /** Web nodes that left on purpose, draining: each goes once its sessions end or its deadline passes. */
  readonly #leaving = new Map<string, number>();

  constructor(deps: { logger: Logger; events: EventSink }, options: { settings: BalancerSettings; dir: string; node: NodeRef }) {
    this.#settings = options.settings;
    this.#dir = options.dir;
    this.#log = deps.logger;
    this.#events = deps.events;
    this.#node = options.node;
    this.haproxy = new HaproxyProcess({ logger: deps.logger }, { program: options.settings.haproxy, dir: options.dir });
    this.haproxy.onUnexpectedExit = (how) => void this.#restart(how);
  }

  /** HAProxy died under the agent: started again from the mirrored config and server-state file, and an operator told. */
  async #restart(how: string): Promise<void> {
    if (this.#closed) return;
    // One start every few seconds at most: an HAProxy that dies at once again must not spin.
    const wait = (this.#restartedAt ?? 0) + RESTART_PAUSE_MS - Date.now();
    this.#restartedAt = Date.now() + Math.max(0, wait);
    this.#log.error({ how, inMs: Math.max(0, wait) }, "haproxy exited unexpectedly; starting it again from the config");
    await this.#emit("alert", { node: this.#node, severity: "critical", code: "HAPROXY_EXITED", message: `balancer ${this.#node.id}: ${how}; starting it again` });
    try {
      if (wait > 0) await abortableDelay(wait, this.#abort.signal);
      await this.#serial(async () => {
        if (this.#closed) return;
        await this.haproxy.start(this.#abort.signal);
        await this.haproxy.saveServerState();
      });
      this.#log.info("haproxy started again");
    } catch (error) {
      this.#log.error({ err: error }, "could not start haproxy again");
      await this.#emit("alert", { node: this.#node, severity: "critical", code: "HAPROXY_NOT_RESTARTED", message: `balancer ${this.#node.id}: ${errorMessage(error)}`.slice(0, 2000) });
    }
  }

  /**
   * Starts HAProxy with the servers the facts call for already in its config (a restarted
   * balancer gets the full list at once); an operator's drain or maintenance from the config an
   * earlier run wrote is kept.
   */
  async start(facts: readonly WebFact[], signal: AbortSignal): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    for (const fact of facts) this.#facts.set(fact.node, applyFact(this.#facts.get(fact.node), fact));
    const before = new Map(parseServerLines(await readFile(this.haproxy.paths.config, "utf8").catch(() => "")).map((s) => [s.name, s]));
    const { servers, refused } = desiredServers(this.#facts.values(), this.#settings.networks);
    for (const [name, address] of servers) this.#servers.set(name, { address, state: before.get(name)?.address === address ? before.get(name)!.state : "ready" });
    await this.haproxy.writeConfig(this.#render());
    await this.haproxy.start(signal);
    this.#started = true;
    await this.haproxy.saveServerState();
    this.#log.info({ servers: [...servers.keys()], refused }, "balancer ready");
    await this.#emitUpdate({ added: [...servers.keys()], removed: [], refused, via: "reload" });
  }

  /** A fact about a web node: applied with the others that come within `debounceMs`. */
  learn(fact: WebFact): void {
    if (this.#closed) return;
    this.#facts.set(fact.node, applyFact(this.#facts.get(fact.node), fact));
    const now = Date.now();
    this.#pendingSince ??= now;
    // A steady trickle of changes must not hold the update back for ever.
    const latest = this.#pendingSince + Math.max(2000, this.#settings.debounceMs * 8);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#pendingSince = undefined;
      void this.#serial(() => this.#update()).catch((error: unknown) => this.#log.error({ err: error }, "could not update the backends"));
    }, Math.max(0, Math.min(this.#settings.debounceMs, latest - now)));
  }

  /** Brings HAProxy's servers to the ones the facts call for, through the runtime API; a gone socket falls back to a checked reload. */
  async #update(): Promise<void> {
    if (this.#closed || !this.#started) return;
    const { servers: desired, refused } = desiredServers(this.#facts.values(), this.#settings.networks);
    const actual = new Map([...this.#servers].map(([name, s]) => [name, s.address]));
    const plan = planServers(desired, actual);
    // With the socket gone the drain cannot be set: the node stays in rotation until the handover below, and goes at its deadline.
    const changedLeaving = await this.#leave(plan, desired).catch((error: unknown) => {
      if (!(error instanceof HaproxyError) || error.code !== "HAPROXY_SOCKET") throw error;
      return false;
    });
    if (plan.add.length === 0 && plan.remove.length === 0) {
      if (refused.length) this.#log.warn({ refused }, "web nodes refused as backends");
      if (changedLeaving) await this.#mirror();
      return;
    }
    let via: "runtime" | "reload" = "runtime";
    try {
      for (const name of plan.remove) await this.#removeServer(name);
      for (const [name, address] of plan.add) await this.#addServer(name, address);
    } catch (error) {
      if (!(error instanceof HaproxyError) || error.code !== "HAPROXY_SOCKET") throw error;
      this.#log.warn({ err: error }, "the runtime socket is gone: applying the change by a checked reload (a new HAProxy takes over)");
      via = "reload";
      for (const name of plan.remove) this.#servers.delete(name);
      for (const [name, address] of plan.add) if (!this.#servers.has(name)) this.#servers.set(name, { address, state: "ready" });
      await this.haproxy.writeConfig(this.#render());
      await this.haproxy.handover(this.#abort.signal);
    }
    await this.#mirror();
    await this.#emitUpdate({ added: plan.add.map(([name]) => name), removed: plan.remove, refused, via });
  }

  /**
   * A web node that left on purpose (decommissioned) is drained, not cut: it leaves `plan.remove`,
   * takes no new sessions, and goes once its sessions end (poll) or `drainTimeoutSeconds` passes.
   * One that comes back while draining is put back in rotation. True when a server's state changed.
   */
  async #leave(plan: { remove: string[] }, desired: ReadonlyMap<string, string>): Promise<boolean> {
    let changed = false;
    for (const [name] of this.#leaving) {
      if (!desired.has(name) || desired.get(name) !== this.#servers.get(name)?.address) continue;
      this.#leaving.delete(name);
      await this.haproxy.runtime.expect(runtimeCommand("set", "server", `${this.#settings.backend}/${name}`, "state", "ready"));
      this.#servers.get(name)!.state = "ready";
      this.#log.info({ backend: name }, "a leaving web node came back: in rotation again");
      changed = true;
    }
    for (const name of [...plan.remove]) {
      const server = this.#servers.get(name);
      if (!this.#facts.get(name)?.graceful || desired.has(name) || !server) continue;
      plan.remove.splice(plan.remove.indexOf(name), 1);
      if (this.#leaving.has(name)) continue;
      this.#leaving.set(name, Date.now() + this.#settings.drainTimeoutSeconds * 1000);
      if (server.state === "ready") {
        await this.haproxy.runtime.expect(runtimeCommand("set", "server", `${this.#settings.backend}/${name}`, "state", "drain"));
        server.state = "drain";
        changed = true;
      }
      this.#log.info({ backend: name, drainTimeoutSeconds: this.#settings.drainTimeoutSeconds }, "a web node left on purpose: draining it before it goes");
    }
    return changed;
  }

  /** Removes the leaving web nodes whose sessions have ended or whose drain time is up. */
  async #finishLeaving(stats: readonly ServerStat[]): Promise<void> {
    const idle = (name: string) => (stats.find((s) => s.name === name)?.sessions ?? 0) === 0;
    const done = [...this.#leaving].filter(([name, deadline]) => idle(name) || Date.now() >= deadline).map(([name]) => ({ name, drained: idle(name) }));
    if (done.length === 0) return;
    await this.#serial(async () => {
      const removed: { name: string; drained: boolean }[] = [];
      for (const node of done) {
        if (!this.#leaving.delete(node.name) || !this.#servers.has(node.name)) continue;
        await this.#removeServer(node.name);
        removed.push(node);
      }
      if (removed.length === 0) return;
      await this.#mirror();
      await this.#emitUpdate({ added: [], removed: removed.map((r) => r.name), refused: [], via: "runtime" });
      // The leaving nodes wait for this before they stop serving.
      await this.onLeft?.(removed).catch((error: unknown) => this.#log.warn({ err: error }, "could not record that leaving web nodes were drained"));
    });
  }

  /** Told of web nodes that left on purpose once they are drained (or their drain time ran out) and removed. */
  onLeft: ((nodes: { name: string; drained: boolean }[]) => Promise<void>) | undefined;

  async #addServer(name: string, address: string): Promise<void> {
    const server = `${this.#settings.backend}/${name}`;
    await this.haproxy.runtime.expect(runtimeCommand("add", "server", server, address, ...checkOptions(this.#settings.check)), /^New server registered\.?$/);
    this.#servers.set(name, { address, state: "ready" });
    // A server added at run time starts in maintenance, its checks off.
    await this.haproxy.runtime.expect(runtimeCommand("enable", "health", server));
    await this.haproxy.runtime.expect(runtimeCommand("enable", "server", server));
    this.#log.info({ backend: name, address }, "added a web node to the backend");
  }

  /** Maintenance, its sessions cut (it left the fleet: they would fail anyway), then deleted. */
  async #removeServer(name: string): Promise<void> {
    const server = `${this.#settings.backend}/${name}`;
    await this.haproxy.runtime.expect(runtimeCommand("set", "server", server, "state", "maint"));
    await this.haproxy.runtime.send(runtimeCommand("shutdown", "sessions", "server", server));
    // Connections kept for reuse are closed by HAProxy shortly after maintenance begins.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const answer = (await this.haproxy.runtime.send(runtimeCommand("del", "server", server))).trim();
      if (/^Server deleted\.?$/.test(answer)) break;
      if (Date.now() > deadline) throw new HaproxyError("HAPROXY_REFUSED", `HAProxy would not delete ${server}: ${answer}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    this.#servers.delete(name);
    this.#health.delete(name);
    this.#log.info({ backend: name }, "removed a web node from the backend");
  }

  /** Drains a web node: no new sessions, its current ones finish (or the timeout passes), then it stays in maintenance. */
  async drain(name: string, timeoutMs: number, signal: AbortSignal): Promise<DrainResult> {
    await this.#serial(() => this.#setState(name, "drain"));
    const began = Date.now();
    let sessions = Number.POSITIVE_INFINITY;
    for (;;) {
      if (!this.#servers.has(name)) return { node: name, drained: false, sessionsLeft: 0, waitedMs: Date.now() - began, state: "maint" };
      const stat = (await this.haproxy.runtime.servers(this.#settings.backend)).find((s) => s.name === name);
      sessions = stat?.sessions ?? 0;
      if (sessions === 0 || Date.now() - began >= timeoutMs || signal.aborted) break;
      await abortableDelay(100, signal);
    }
    await this.#serial(() => this.#setState(name, "maint"));
    const result = { node: name, drained: sessions === 0, sessionsLeft: sessions, waitedMs: Date.now() - began, state: "maint" as const };
    this.#log.info(result, result.drained ? "drained a web node" : "drain timeout passed with sessions left; the node is out of rotation");
    return result;
  }

  /** Puts a drained web node back into rotation. */
  enable(name: string): Promise<void> {
    return this.#serial(() => this.#setState(name, "ready"));
  }

  async #setState(name: string, state: BackendState): Promise<void> {
    const server = this.#servers.get(name);
    if (!server) {
      const known = [...this.#servers.keys()].sort().join(", ") || "none";
      throw new BalancerError("BACKEND_UNKNOWN", `node ${name} is not a backend of this balancer; its backends: ${known}`);
    }
    await this.haproxy.runtime.expect(runtimeCommand("set", "server", `${this.#settings.backend}/${name}`, "state", state));
    server.state = state;
    await this.#mirror();
  }

  /** Reads HAProxy's view of the servers and reports changes in their checks' verdicts as events. */
  async poll(): Promise<void> {
    if (!this.#started || this.#closed) return;
    const stats = await this.haproxy.runtime.servers(this.#settings.backend);
    this.#stats = new Map(stats.map((s) => [s.name, s]));
    if (this.#leaving.size > 0) await this.#finishLeaving(stats);
    const changes: EventPayload<"lb-health">[] = [];
    for (const stat of stats) {
      const to = healthOf(stat.status);
      const from = this.#health.get(stat.name) ?? "unchecked";
      this.#health.set(stat.name, to);
      if (from !== to) changes.push({ node: this.#node, backend: stat.name, address: stat.address, from, to, status: stat.status, ...(stat.check ? { check: stat.check } : {}) });
    }
    if (changes.length === 0) return;
    // The checks' verdicts go into the server-state file too: HAProxy started after a crash or a handover starts from them.
    await this.haproxy.saveServerState();
    for (const change of changes) {
      this.#log.info({ backend: change.backend, from: change.from, to: change.to, status: change.status, check: change.check }, "backend health changed");
      await this.#emit("lb-health", change);
    }
  }

  report(): BalancerReport {
    const { host, port } = this.#settings.listen;
    const backends = [...this.#servers].map(([name, s]) => {
      const stat = this.#stats.get(name);
      return { node: name, address: s.address, state: s.state, health: healthOf(stat?.status ?? ""), status: stat?.status ?? "", sessions: stat?.sessions ?? 0 };
    });
    return { listen: `${host}:${port}`, ...(this.haproxy.pid ? { pid: this.haproxy.pid } : {}), backends, ...(this.#started ? {} : { problem: "HAProxy is not running yet" }) };
  }

  /** Stops updates, lets the one running finish, then stops HAProxy. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    await this.#work.catch(() => undefined);
    await this.haproxy.stop();
  }

  #render(): string {
    return renderConfig(this.#settings, this.#dir, [...this.#servers].map(([name, s]) => ({ name, ...s })));
  }

  /** Every change goes into haproxy.cfg (checked with haproxy -c first) and the server-state file. */
  async #mirror(): Promise<void> {
    try {
      await this.haproxy.writeConfig(this.#render());
      await this.haproxy.saveServerState();
    } catch (error) {
      this.#log.error({ err: error }, "could not mirror the backends into haproxy.cfg and the server-state file");
      const code = error instanceof HaproxyError ? error.code : "HAPROXY_MIRROR";
      await this.#emit("alert", { node: this.#node, severity: "warning", code, message: `balancer ${this.#node.id}: ${errorMessage(error)}`.slice(0, 2000) });
    }
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#work.catch(() => undefined).then(work);
    this.#work = next;
    return next;
  }

  async #emitUpdate(change: { added: string[]; removed: string[]; refused: { node: string; reason: string }[]; via: "runtime" | "reload" }): Promise<void> {
    this.#log.info({ ...change, servers: this.#servers.size }, "backends updated");
    await this.#emit("lb-update", { node: this.#node, ...change, servers: this.#servers.size });
  }

  async #emit<T extends "lb-update" | "lb-health" | "alert">(type: T, payload: EventPayload<T>): Promise<void> {
    await this.#events.emit(type, `${type}-${this.#node.id}-${randomUUID()}`, payload).catch((error: unknown) => this.#log.warn({ err: error, type }, "could not publish a balancer event"));
  }
}
