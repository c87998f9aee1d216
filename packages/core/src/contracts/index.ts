import type { CommandContract } from "./command.ts";
import { decommissionContract, probeContract, rotateKeyContract } from "./spine.ts";
import { activateContract, releaseContract, rollbackContract } from "./web.ts";
import { backupNowContract, drillContract, restoreContract } from "./db.ts";
import { lbDrainContract, lbEnableContract } from "./balancer.ts";

export * from "./command.ts";
export * from "./record.ts";
export * from "./spine.ts";
export * from "./web.ts";
export * from "./db.ts";
export * from "./balancer.ts";
export * from "./events.ts";

/** Every command type the fleet knows, by type. Adding a type is adding a contract and a row here. */
export const commandContracts: ReadonlyMap<string, CommandContract> = new Map(
  [probeContract, decommissionContract, rotateKeyContract, releaseContract, activateContract, rollbackContract, backupNowContract, restoreContract, drillContract, lbDrainContract, lbEnableContract].map((c) => [c.type, c as CommandContract]),
);
