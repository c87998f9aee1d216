import { Coordinator } from "@bosun/coordinator";
import { systemClock } from "@bosun/core";
import type { Context } from "../context.ts";

export async function startCoordinator(ctx: Context): Promise<Coordinator> {
  const coordinator = new Coordinator(
    { clients: ctx.clients, logger: ctx.logger, clock: systemClock, trust: ctx.trust(), signer: ctx.signer() },
    { settings: ctx.settings },
  );
  await coordinator.start();
  return coordinator;
}
