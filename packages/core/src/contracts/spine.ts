import { z } from "zod";
import { defineContract } from "./command.ts";

/**
 * A harmless job for checking a fleet end to end: it holds a job slot for `seconds`, then
 * records the command id in the node's probe log.
 */
export const probeContract = defineContract({
  type: "probe",
  summary: "Hold a job slot for some seconds, then record the command id in the node's probe log",
  payload: z.object({ seconds: z.number().min(0).max(3600).default(0), note: z.string().max(200).optional() }).strict(),
});

/** Takes a node out of the fleet: it announces node-down, removes its queue and stops. */
export const decommissionContract = defineContract({
  type: "decommission",
  summary: "Announce node-down, remove this node's queue and stop the agent",
  payload: z.object({ reason: z.string().max(200).optional() }).strict(),
});

/**
 * Rotates the node's own event key without a moment in which its events are not believed:
 * `rotate` makes a new key, registers it beside the old one and signs with it from then on;
 * `retire`, sent once verifiers have seen the new key, unregisters the old one.
 */
export const rotateKeyContract = defineContract({
  type: "rotate-key",
  summary: "Rotate this node's event key: rotate (new key, both registered), later retire (old key unregistered)",
  payload: z.object({ step: z.enum(["rotate", "retire"]).default("rotate") }).strict(),
});
