import type { CommandContext, CommandOutcome } from "../../../command.ts";
import { ReleaseRoot, type SwapOutcome } from "../release-root.ts";

type Found = { ok: true; value: ReleaseRoot } | { ok: false; failure: Extract<CommandOutcome, { status: "failed" }> };

/** The app's deploy root on this node, or a failure saying the app is not served here. */
export function releaseRoot(ctx: CommandContext<{ app: string }>): Found {
  const settings = ctx.settings.apps[ctx.payload.app];
  if (!settings) return { ok: false, failure: { status: "failed", code: "APP_UNKNOWN", error: `app ${ctx.payload.app} is not configured on this node` } };
  return { ok: true, value: new ReleaseRoot({ logger: ctx.log }, { app: ctx.payload.app, settings }) };
}

/** Turns a swap outcome into the command's outcome; a skip is a success that says why. */
export function swapOutcome(outcome: SwapOutcome): CommandOutcome {
  if (outcome.status === "failed") return { status: "failed", code: outcome.code, error: outcome.error };
  if (outcome.status === "interrupted") return { status: "interrupted" };
  return { status: "done", result: outcome };
}
