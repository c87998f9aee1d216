import type { Logger } from "pino";

export type ServiceState = "starting" | "running" | "draining" | "stopped" | "failed";

export interface CleanupStep {
  name: string;
  run(): Promise<unknown> | unknown;
}

/**
 * The one start/stop shape of Bosun's long-running services (agent, coordinator): an explicit
 * state, every change logged through here as "<service> <state>", and a close that runs once
 * however often it is called and runs every cleanup step even when one fails.
 */
export class Lifecycle {
  readonly #log: Logger;
  readonly #service: string;
  #state: ServiceState = "starting";
  #closing: Promise<void> | undefined;

  constructor(log: Logger, service: string) {
    this.#log = log;
    this.#service = service;
  }

  get state(): ServiceState {
    return this.#state;
  }

  /** Moves to a state and logs it, with what the caller wants said about it. */
  enter(state: ServiceState, fields: Record<string, unknown> = {}): void {
    if (state === this.#state) return;
    const from = this.#state;
    this.#state = state;
    const level = state === "failed" ? "error" : "info";
    this.#log[level]({ ...fields, from, state }, `${this.#service} ${state}`);
  }

  /**
   * Stops the service: draining, then every step in order (a failing step is logged and the
   * next one runs), then stopped, or failed if it had failed before. Safe to call twice: the
   * second call waits for the first.
   */
  close(steps: () => readonly CleanupStep[], fields: () => Record<string, unknown> = () => ({})): Promise<void> {
    this.#closing ??= (async () => {
      const failed = this.#state === "failed";
      this.enter("draining");
      const errors: unknown[] = [];
      for (const step of steps()) {
        try {
          await step.run();
        } catch (error) {
          errors.push(error);
          this.#log.error({ err: error, step: step.name }, `${this.#service} could not ${step.name}`);
        }
      }
      this.#state = "draining";
      this.enter(failed ? "failed" : "stopped", { ...fields(), failedSteps: errors.length });
    })();
    return this.#closing;
  }
}
