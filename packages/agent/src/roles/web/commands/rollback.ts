import { rollbackContract } from "@bosun/core";
import { defineCommand } from "../../../command.ts";
import { releaseRoot, swapOutcome } from "./shared.ts";

/** Swaps back to a kept release (the previous one by default), with no fetch. */
export const rollback = defineCommand(rollbackContract, {
  onInterrupted: "resume",
  async handle(ctx) {
    const found = releaseRoot(ctx);
    if (!found.ok) return found.failure;
    const root = found.value;
    const target = ctx.payload.to ?? (await root.readState()).previous;
    if (!target) return { status: "failed", code: "NO_PREVIOUS_RELEASE", error: `app ${ctx.payload.app} has no previous release on this node` };
    if (!(await root.isPrepared(target))) {
      return { status: "failed", code: "RELEASE_NOT_KEPT", error: `release ${target} is not kept on this node; kept: ${(await root.releases()).map((c) => c.slice(0, 12)).join(", ") || "none"}` };
    }
    return swapOutcome(await root.activate(target, ctx.payload.sequence, { signal: ctx.signal, log: ctx.log }));
  },
});
