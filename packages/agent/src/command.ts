import type { z } from "zod";
import type { CommandContract, Envelope, Logger, NodeRef, Settings } from "@bosun/core";
import type { RoleServices } from "./role.ts";

/** Everything a handler gets for one command: the command itself, where it runs, and how to report. */
export interface CommandContext<P> {
  payload: P;
  envelope: Envelope;
  node: NodeRef;
  /** Aborted when the agent stops past its deadline: checkpoint and return `interrupted`. */
  signal: AbortSignal;
  log: Logger;
  /** This node's state directory, for the command's own files. */
  stateDir: string;
  settings: Settings;
  /** True when an earlier run of the agent started this command and died before it finished. */
  resumed: boolean;
  progress(message: string, fraction?: number): Promise<void>;
  /** The agent's services: AWS clients, state records, events, clock. */
  services: RoleServices;
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

/** A command type as an agent carries it out: its contract (from core) and its handler. */
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

/** Joins a command's contract with its handler. */
export function defineCommand<S extends z.ZodType>(
  contract: CommandContract<S>,
  handler: { onInterrupted: "resume" | "fail"; handle(ctx: CommandContext<z.infer<S>>): Promise<CommandOutcome> },
): CommandDefinition<z.infer<S>> {
  return { type: contract.type, summary: contract.summary, payload: contract.payload as z.ZodType<z.infer<S>>, ...handler };
}
