import { appendFile, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { abortableDelay } from "@bosun/aws";
import { probeContract } from "@bosun/core";
import { defineCommand } from "../command.ts";

/**
 * A harmless job for checking a fleet end to end: it holds a job slot for `seconds`,
 * reporting progress, then appends the command id to the node's probe log. Operators use
 * it to see that every node receives, runs and reports; the tests use its log to count effects.
 */
export const probe = defineCommand(probeContract, {
  onInterrupted: "resume",
  async handle(ctx) {
    const log = join(ctx.stateDir, "probe.log");
    if (ctx.resumed && (await recorded(log, ctx.envelope.id))) {
      return { status: "done", result: { recorded: true, resumedAfterEffect: true } };
    }
    const started = Date.now();
    const end = started + ctx.payload.seconds * 1000;
    while (Date.now() < end) {
      await abortableDelay(Math.min(1000, end - Date.now()), ctx.signal);
      if (ctx.signal.aborted) return { status: "interrupted" };
      await ctx.progress(`waited ${Math.round((Date.now() - started) / 1000)}s`, Math.min(1, (Date.now() - started) / (end - started)));
    }
    await mkdir(ctx.stateDir, { recursive: true });
    await appendFile(log, `${ctx.envelope.id} ${new Date().toISOString()}${ctx.payload.note ? ` ${ctx.payload.note}` : ""}\n`);
    return { status: "done", result: { recorded: true, seconds: ctx.payload.seconds } };
  },
});

async function recorded(path: string, id: string): Promise<boolean> {
  try {
    return (await readFile(path, "utf8")).split("\n").some((line) => line.startsWith(`${id} `));
  } catch {
    return false;
  }
}
