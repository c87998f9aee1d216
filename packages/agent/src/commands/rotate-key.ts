import { rotateKeyContract } from "@bosun/core";
import { defineCommand } from "../command.ts";

/** Rotates this node's own event key, in two steps (see the contract). */
export const rotateKey = defineCommand(rotateKeyContract, {
  // Each step is safe to run again: rotate makes one more key (two are held at most), retire keeps the newest.
  onInterrupted: "resume",
  async handle(ctx) {
    const keys = ctx.services.nodeKeys;
    if (!keys) return { status: "failed", code: "NO_KEYRING", error: "this process holds no node keys" };
    if (ctx.payload.step === "rotate") {
      const kid = await keys.rotate();
      ctx.log.info({ kid }, "rotated the node's event key; the previous one stays registered until retired");
      return { status: "done", result: { step: "rotate", signingWith: kid } };
    }
    const retired = await keys.retire();
    ctx.log.info({ retired }, "retired the node's previous event keys");
    return { status: "done", result: { step: "retire", retired } };
  },
});
