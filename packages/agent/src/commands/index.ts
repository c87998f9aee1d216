import type { CommandDefinition } from "./types.ts";
import { probe } from "./probe.ts";
import { decommission } from "./decommission.ts";
import { release } from "./release.ts";
import { activate } from "./activate.ts";
import { rollback } from "./rollback.ts";

export { defineCommand, type CommandDefinition, type CommandContext, type CommandOutcome } from "./types.ts";

/** Every command type an agent carries out. Adding a type is adding a module and a row here. */
export const commandTable: ReadonlyMap<string, CommandDefinition<never>> = new Map(
  ([probe, decommission, release, activate, rollback] as CommandDefinition<never>[]).map((definition) => [definition.type, definition]),
);
