import { rollbackApp, type RollbackOptions, type RollbackResult } from "@bosun/coordinator";
import type { Context } from "../context.ts";
import { renderSend } from "./send.ts";

/** `bosun rollback`: swaps every web node of an app back to a kept release (coordinator/procedures/rollout.ts). */
export function rollback(ctx: Context, options: RollbackOptions): Promise<RollbackResult> {
  return rollbackApp(ctx, options);
}

export function renderRollback(result: RollbackResult, options: { withTable: boolean }): string {
  return renderSend({ commandId: result.commandId, type: "rollback", target: `role:web → ${result.to.slice(0, 12)}`, ...(result.result ? { result: result.result } : {}) }, options);
}
