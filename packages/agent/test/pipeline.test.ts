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
        // Every copy is settled quietly (deleted, not dead-lettered, no event): it is not bad input.
        assert.deepEqual(dispositions.map((d) => d.action), Array(8).fill("delete"), `trial ${trial}: every delivery settled`);
        assert.equal(h.events.of("done", command.id).length, 1);
        assert.equal(h.events.of("refused").length, 0);
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

describe("the message pipeline's outcomes", () => {
  const command = (handle: CommandDefinition<never>["handle"], onInterrupted: "resume" | "fail" = "resume") =>
    defineCommand(defineContract({ type: "job", summary: "a test job", payload: z.object({}).strict() }), { onInterrupted, handle }) as CommandDefinition<never>;

  it("bad input is dead-lettered with its reason and reported, and never reaches a handler", async () => {
    let ran = 0;
    const h = await PipelineHarness.create([command(async () => ((ran += 1), { status: "done", result: {} }))]);
    try {
      const cases: [string, string][] = [
        ["{not json", "malformed-json"],
        [JSON.stringify({ ...h.command("job", {}), sig: "" }), "unsigned"],
        [JSON.stringify({ ...h.command("job", {}), payload: { extra: 1 } }), "bad-signature"],
        [JSON.stringify(h.command("job", { extra: 1 })), "bad-payload"],
        [JSON.stringify(h.command("nope", {})), "unknown-type"],
        [JSON.stringify(h.command("job", {}, { nodes: ["node-2"] })), "wrong-target"],
      ];
      for (const [body, reason] of cases) {
        const disposition = await h.pipeline.handle(h.delivery(body), new AbortController().signal);
        assert.equal(disposition.action === "dead-letter" && disposition.reason, reason);
        assert.ok(h.events.of("refused").some((e) => (e.payload as { reason: string }).reason === reason), `a refused event for ${reason}`);
      }
      assert.equal(ran, 0);
    } finally {
      await h.close();
    }
  });

  it("a handler asking to be retried leaves no ledger entry, so the next delivery runs afresh", async () => {
    let runs = 0;
    const h = await PipelineHarness.create([command(async () => (++runs === 1 ? { status: "retry", reason: "busy", afterSeconds: 3 } : { status: "done", result: {} }))]);
    try {
      const body = JSON.stringify(h.command("job", {}));
      assert.deepEqual(await h.pipeline.handle(h.delivery(body, "m"), new AbortController().signal), { action: "retry", retryAfterSeconds: 3 });
      assert.deepEqual(await h.pipeline.handle(h.delivery(body, "m"), new AbortController().signal), { action: "delete" });
      assert.equal(runs, 2);
      assert.deepEqual(h.events.of("ack").map((e) => (e.payload as { resumed: boolean }).resumed), [false, false]);
    } finally {
      await h.close();
    }
  });

  it("an interrupted command resumes on its next delivery, or is reported failed when it cannot resume", async () => {
    for (const onInterrupted of ["resume", "fail"] as const) {
      let runs = 0;
      const h = await PipelineHarness.create([command(async () => (++runs === 1 ? { status: "interrupted" } : { status: "done", result: {} }), onInterrupted)]);
      try {
        const envelope = h.command("job", {});
        const body = JSON.stringify(envelope);
        const first = await h.pipeline.handle(h.delivery(body, "m"), new AbortController().signal);
        if (onInterrupted === "resume") {
          assert.deepEqual(first, { action: "retry", retryAfterSeconds: 0 });
          assert.equal((await h.ledger.get(envelope.id))?.state, "started");
          assert.deepEqual(await h.pipeline.handle(h.delivery(body, "m"), new AbortController().signal), { action: "delete" });
          assert.deepEqual(h.events.of("ack").map((e) => (e.payload as { resumed: boolean }).resumed), [false, true]);
          assert.equal(h.events.of("done", envelope.id).length, 1);
        } else {
          assert.deepEqual(first, { action: "delete" });
          assert.equal((h.events.of("failed", envelope.id)[0]?.payload as { code: string }).code, "INTERRUPTED");
          assert.equal(runs, 1);
        }
      } finally {
        await h.close();
      }
    }
  });

  it("the same delivery of a finished command again reports its result again and has no effect", async () => {
    let runs = 0;
    const h = await PipelineHarness.create([command(async () => ((runs += 1), { status: "done", result: { n: runs } }))]);
    try {
      const envelope = h.command("job", {});
      const body = JSON.stringify(envelope);
      await h.pipeline.handle(h.delivery(body, "m"), new AbortController().signal);
      assert.deepEqual(await h.pipeline.handle(h.delivery(body, "m"), new AbortController().signal), { action: "delete" });
      assert.equal(runs, 1);
      assert.deepEqual(h.events.of("done", envelope.id).map((e) => (e.payload as { result: unknown }).result), [{ n: 1 }, { n: 1 }]);
    } finally {
      await h.close();
    }
  });
});
