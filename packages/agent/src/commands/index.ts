import type { CommandDefinition } from "./types.ts";
import { probe } from "./probe.ts";
import { decommission } from "./decommission.ts";

export type { CommandDefinition, CommandContext, CommandOutcome } from "./types.ts";

/** Every command type an agent carries out. Adding a type is adding a module and a row here. */
export const commandTable: ReadonlyMap<string, CommandDefinition<never>> = new Map(
  ([probe, decommission] as CommandDefinition<never>[]).map((definition) => [definition.type, definition]),
);
