import { z } from "zod";
import { appNamePattern } from "@bosun/core";
import { ReleaseRoot, PrepareError } from "../web/release-root.ts";
import { commitPattern } from "../web/git.ts";
import { defineCommand, type CommandContext, type CommandOutcome } from "./types.ts";

export const app = z.string().regex(appNamePattern, "expected an app name of lower-case letters, digits or '-'");
export const commit = z.string().regex(commitPattern, "expected a full 40-character commit id");

/** The app's deploy root on this node, or a failure saying the app is not served here. */
export function releaseRoot(ctx: CommandContext<{ app: string }>): ReleaseRoot | Extract<CommandOutcome, { status: "failed" }> {
  const settings = ctx.settings.apps[ctx.payload.app];
  if (!settings) return { status: "failed", code: "APP_UNKNOWN", error: `app ${ctx.payload.app} is not configured on this node` };
  return new ReleaseRoot({ logger: ctx.log }, { app: ctx.payload.app, settings });
}

/** Turns a swap outcome into the command's outcome; a skip is a success that says why. */
export function swapOutcome(outcome: Awaited<ReturnType<ReleaseRoot["activate"]>>): CommandOutcome {
  if (outcome.status === "failed") return { status: "failed", code: outcome.code, error: outcome.error };
  if (outcome.status === "interrupted") return { status: "interrupted" };
  return { status: "done", result: outcome };
}

/**
 * Prepares a release on a web node: fetch the commit into releases/<commit>, verify the tree,
 * build it, report ready. With `activate`, the node also swaps to it as soon as it is ready
 * (a release published without waiting); otherwise an `activate` command follows.
 */
export const release = defineCommand({
  type: "release",
  summary: "Fetch, verify and build a commit of an app into releases/<commit>; optionally make it current",
  payload: z.object({ app, repo: z.string().min(1).max(2048).regex(/^[^-]/, "a repository may not start with '-'"), commit, sequence: z.number().int().positive(), activate: z.boolean().default(false) }).strict(),
  onInterrupted: "resume",
  async handle(ctx) {
    const root = releaseRoot(ctx);
    if (!(root instanceof ReleaseRoot)) return root;
    const { repo, commit: wanted, sequence } = ctx.payload;
    await ctx.progress(`preparing ${wanted.slice(0, 12)}`, 0.1);
    let prepared;
    try {
      prepared = await root.prepare(repo, wanted, ctx.signal, ctx.log);
    } catch (error) {
      if (ctx.signal.aborted) return { status: "interrupted" };
      if (error instanceof PrepareError) return { status: "failed", code: error.code, error: error.message };
      return { status: "failed", code: "PREPARE_FAILED", error: (error as Error).message };
    }
    if (!ctx.payload.activate) return { status: "done", result: { status: "ready", commit: wanted, ...prepared } };
    await ctx.progress(`activating ${wanted.slice(0, 12)}`, 0.8);
    return swapOutcome(await root.activate(wanted, sequence, { signal: ctx.signal, log: ctx.log }));
  },
});
