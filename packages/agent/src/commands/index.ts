import type { CommandDefinition } from "../command.ts";
import { probe } from "./probe.ts";
import { decommission } from "./decommission.ts";
import { rotateKey } from "./rotate-key.ts";

/** The spine's own commands, which every agent takes whatever its roles. */
export const spineCommands: readonly CommandDefinition<never>[] = [probe, decommission, rotateKey] as CommandDefinition<never>[];
