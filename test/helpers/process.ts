import type { ChildProcess } from "node:child_process";
import { once } from "node:events";

/** A server the tests run as a child process (nginx, moto, HAProxy, MariaDB), stopped by a signal and, if need be, by SIGKILL. */
export class ChildServer {
  protected readonly child: ChildProcess;
  readonly #exited: Promise<unknown>;
  readonly #stopSignal: NodeJS.Signals;

  constructor(child: ChildProcess, stopSignal: NodeJS.Signals = "SIGTERM") {
    this.child = child;
    this.#exited = once(child, "exit");
    this.#stopSignal = stopSignal;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(killAfterMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill(this.#stopSignal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), killAfterMs);
    await this.#exited;
    clearTimeout(timer);
  }
}
