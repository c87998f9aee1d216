import { z } from "zod";
import { ReleaseRoot } from "../web/release-root.ts";
import { app, commit, releaseRoot, swapOutcome } from "./release.ts";
import { defineCommand } from "./types.ts";

/** Makes a prepared release current on this node: one rename(2) (at `at`, when given), then the health probe. */
export const activate = defineCommand({
  type: "activate",
  summary: "Swap an app's `current` to a prepared release, probe the site, swap back if it fails",
  payload: z.object({ app, commit, sequence: z.number().int().positive(), at: z.iso.datetime().optional() }).strict(),
  onInterrupted: "resume",
  async handle(ctx) {
    const root = releaseRoot(ctx);
    if (!(root instanceof ReleaseRoot)) return root;
    const { at } = ctx.payload;
    return swapOutcome(await root.activate(ctx.payload.commit, ctx.payload.sequence, { signal: ctx.signal, log: ctx.log, ...(at ? { swapAt: Date.parse(at) } : {}) }));
  },
});
