import { z } from "zod";
import { ReleaseRoot } from "../web/release-root.ts";
import { app, commit, releaseRoot, swapOutcome } from "./release.ts";
import { defineCommand } from "./types.ts";

/** Swaps back to a kept release (the previous one by default), with no fetch. */
export const rollback = defineCommand({
  type: "rollback",
  summary: "Swap an app back to a kept release (the previous one unless `to` names one)",
  payload: z.object({ app, to: commit.optional(), sequence: z.number().int().positive() }).strict(),
  onInterrupted: "resume",
  async handle(ctx) {
    const root = releaseRoot(ctx);
    if (!(root instanceof ReleaseRoot)) return root;
    const target = ctx.payload.to ?? (await root.readState()).previous;
    if (!target) return { status: "failed", code: "NO_PREVIOUS_RELEASE", error: `app ${ctx.payload.app} has no previous release on this node` };
    if (!(await root.isPrepared(target))) {
      return { status: "failed", code: "RELEASE_NOT_KEPT", error: `release ${target} is not kept on this node; kept: ${(await root.releases()).map((c) => c.slice(0, 12)).join(", ") || "none"}` };
    }
    return swapOutcome(await root.activate(target, ctx.payload.sequence, { signal: ctx.signal, log: ctx.log }));
  },
});
