import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { defineCommand, type CommandDefinition } from "@bosun/agent";
import { defineContract } from "@bosun/core";
import { PipelineHarness } from "./helpers/pipeline.ts";

/** A command whose effect is counted, and which yields to the event loop as real handlers do. */
function countingCommand() {
  const effects = new Map<string, number>();
  const definition = defineCommand(defineContract({ type: "count", summary: "count an effect", payload: z.object({}).strict() }), {
    onInterrupted: "resume",
    async handle(ctx) {
      await new Promise((r) => setTimeout(r, 2));
      effects.set(ctx.envelope.id, (effects.get(ctx.envelope.id) ?? 0) + 1);
      return { status: "done", result: {} };
    },
  });
  return { definition: definition as CommandDefinition<never>, effects };
}

describe("the message pipeline", () => {
  it("runs a command once when many copies arrive at the same moment, trial after trial", async () => {
    const { definition, effects } = countingCommand();
    const h = await PipelineHarness.create([definition]);
    try {
      for (let trial = 0; trial < 50; trial++) {
        const command = h.command("count", {});
        const body = JSON.stringify(command);
        // Eight deliveries of one signed command, handled concurrently as the consumer would.
        const dispositions = await Promise.all(Array.from({ length: 8 }, () => h.pipeline.handle(h.delivery(body), new AbortController().signal)));
        assert.equal(effects.get(command.id), 1, `trial ${trial}: effect once`);
        assert.equal(dispositions.filter((d) => d.action === "delete").length, 1, `trial ${trial}: one delivery ran it`);
        assert.deepEqual(
          dispositions.filter((d) => d.action === "dead-letter").map((d) => (d.action === "dead-letter" ? d.reason : "")),
          Array(7).fill("replayed"),
        );
        assert.equal(h.events.of("done", command.id).length, 1);
      }
    } finally {
      await h.close();
    }
  });

  it("a redelivery of the message that is running is left for later, not run again", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let runs = 0;
    const slow = defineCommand(defineContract({ type: "slow", summary: "waits for the test", payload: z.object({}).strict() }), {
      onInterrupted: "resume",
      async handle() {
        runs += 1;
        await gate;
        return { status: "done", result: {} };
      },
    }) as CommandDefinition<never>;
    const h = await PipelineHarness.create([slow]);
    try {
      const body = JSON.stringify(h.command("slow", {}));
      const first = h.pipeline.handle(h.delivery(body, "m-1"), new AbortController().signal);
      await h.events.waitFor((events) => events.some((e) => e.type === "ack"), "the ack");
      const again = await h.pipeline.handle(h.delivery(body, "m-1"), new AbortController().signal);
      assert.equal(again.action, "retry");
      release();
      assert.equal((await first).action, "delete");
      assert.equal(runs, 1);
    } finally {
      await h.close();
    }
  });
});
