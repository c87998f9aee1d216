import type { z } from "zod";
import type { Envelope, Logger, NodeRef, Settings } from "@bosun/core";

export interface CommandContext<P> {
  payload: P;
  envelope: Envelope;
  node: NodeRef;
  /** Aborted when the agent stops past its deadline: checkpoint and return `interrupted`. */
  signal: AbortSignal;
  log: Logger;
  /** This node's state directory, for the command's own files. */
  stateDir: string;
  /** This node's settings (its apps, for the web role). */
  settings: Settings;
  /** True when an earlier run of the agent started this command and died before it finished. */
  resumed: boolean;
  progress(message: string, fraction?: number): Promise<void>;
}

/**
 * How a handler ends. `retry` is "not now" (SQS delivers the message again later);
 * `interrupted` means the stop deadline cut it short. A bug is thrown, not returned.
 */
export type CommandOutcome =
  | { status: "done"; result: unknown; then?: "decommission" }
  | { status: "failed"; error: string; code: string }
  | { status: "retry"; reason: string; afterSeconds: number }
  | { status: "interrupted" };

export interface CommandDefinition<P = unknown> {
  type: string;
  summary: string;
  payload: z.ZodType<P>;
  /**
   * What to do when the ledger shows an earlier run started this command and died:
   * run it again (the handler checks its own checkpoint) or report it failed.
   */
  onInterrupted: "resume" | "fail";
  handle(ctx: CommandContext<P>): Promise<CommandOutcome>;
}

export function defineCommand<P>(definition: CommandDefinition<P>): CommandDefinition<P> {
  return definition;
}
