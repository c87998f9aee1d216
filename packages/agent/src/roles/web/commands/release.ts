import { releaseContract } from "@bosun/core";
import { defineCommand } from "../../../command.ts";
import { PrepareError } from "../tree.ts";
import { releaseRoot, swapOutcome } from "./shared.ts";

/**
 * Prepares a release on a web node: fetch the commit into releases/<commit>, verify the tree,
 * build it, report ready. With `activate`, the node also swaps to it as soon as it is ready
 * (a release published without waiting); otherwise an `activate` command follows.
 */
export const release = defineCommand(releaseContract, {
  onInterrupted: "resume",
  async handle(ctx) {
    const root = releaseRoot(ctx);
    if (!root.ok) return root.failure;
    const { repo, commit: wanted, sequence } = ctx.payload;
    await ctx.progress(`preparing ${wanted.slice(0, 12)}`, 0.1);
    let prepared;
    try {
      prepared = await root.value.prepare(repo, wanted, ctx.signal, ctx.log);
    } catch (error) {
      if (ctx.signal.aborted) return { status: "interrupted" };
      if (error instanceof PrepareError) return { status: "failed", code: error.code, error: error.message };
      return { status: "failed", code: "PREPARE_FAILED", error: (error as Error).message };
    }
    if (!ctx.payload.activate) return { status: "done", result: { status: "ready", commit: wanted, ...prepared } };
    await ctx.progress(`activating ${wanted.slice(0, 12)}`, 0.8);
    return swapOutcome(await root.value.activate(wanted, sequence, { signal: ctx.signal, log: ctx.log }));
  },
});
