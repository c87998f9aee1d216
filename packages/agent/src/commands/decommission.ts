import { z } from "zod";
import { defineCommand } from "./types.ts";

/** Takes a node out of the fleet: it announces node-down, removes its queue and stops. */
export const decommission = defineCommand({
  type: "decommission",
  summary: "Announce node-down, remove this node's queue and stop the agent",
  payload: z.object({ reason: z.string().max(200).optional() }).strict(),
  onInterrupted: "resume",
  async handle(ctx) {
    ctx.log.info({ reason: ctx.payload.reason }, "decommissioning this node");
    return { status: "done", result: { decommissioned: true }, then: "decommission" };
  },
});
