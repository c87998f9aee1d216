import { decommissionContract } from "@bosun/core";
import { defineCommand } from "../command.ts";

/** Takes a node out of the fleet: it announces node-down, removes its queue and stops. */
export const decommission = defineCommand(decommissionContract, {
  onInterrupted: "resume",
  async handle(ctx) {
    ctx.log.info({ reason: ctx.payload.reason }, "decommissioning this node");
    return { status: "done", result: { decommissioned: true }, then: "decommission" };
  },
});
