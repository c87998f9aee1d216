import { activateContract } from "@bosun/core";
import { defineCommand } from "../../../command.ts";
import { releaseRoot, swapOutcome } from "./shared.ts";

/** Makes a prepared release current on this node: one rename(2) (at `at`, when given), then the health probe. */
export const activate = defineCommand(activateContract, {
  onInterrupted: "resume",
  async handle(ctx) {
    const root = releaseRoot(ctx);
    if (!root.ok) return root.failure;
    const { at } = ctx.payload;
    return swapOutcome(await root.value.activate(ctx.payload.commit, ctx.payload.sequence, { signal: ctx.signal, log: ctx.log, ...(at ? { swapAt: Date.parse(at) } : {}) }));
  },
});
