import { sendCommand, type NodeProgress, type SendResult } from "@bosun/coordinator";
import { ConfigError } from "@bosun/core";
import type { Context } from "../context.ts";
import { renderProgress } from "../live.ts";

export interface SendFlags {
  type: string;
  target: string;
  /** The payload as JSON text, as given on the command line. */
  payload: string;
  wait: boolean;
  timeoutSeconds: number;
  onProgress?: (nodes: NodeProgress[]) => void;
}

/** Signs and publishes one command; with `wait`, follows it until every target node has answered. */
export async function send(ctx: Context, flags: SendFlags): Promise<SendResult> {
  let payload: unknown;
  try {
    payload = JSON.parse(flags.payload);
  } catch (error) {
    throw new ConfigError(`Invalid --payload: not JSON (${(error as Error).message}), received ${JSON.stringify(flags.payload)}`);
  }
  return sendCommand(ctx, { ...flags, payload });
}

/** `withTable: false` when a live view already left the table on the terminal. */
export function renderSend(result: SendResult, options: { withTable: boolean } = { withTable: true }): string {
  const head = `Sent ${result.type} ${result.commandId} to ${result.target}`;
  if (!result.result) return head;
  const lines = options.withTable ? [head, renderProgress(result.result.nodes)] : [head];
  if (result.result.failed.length) lines.push(`Failed: ${result.result.failed.join(", ")}`);
  if (result.result.missing.length) lines.push(`No answer in time: ${result.result.missing.join(", ")}`);
  if (result.result.nodes.length === 0) lines.push("No node was expected or answered: is any node with that role up? (bosun nodes)");
  return lines.join("\n");
}
