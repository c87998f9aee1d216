import type { z } from "zod";

/**
 * What a command type is, apart from how any node carries it out: its name, what it does,
 * which role carries it out (none: every agent), and its payload's schema. The CLI checks
 * payloads with it before signing, the coordinator schedules with it, agents parse with it.
 */
export interface CommandContract<S extends z.ZodType = z.ZodType> {
  type: string;
  summary: string;
  /** The role whose nodes carry it out; undefined for the spine's own commands, which every agent takes. */
  role?: string;
  payload: S;
}

export function defineContract<S extends z.ZodType>(contract: CommandContract<S>): CommandContract<S> {
  return contract;
}

export type PayloadOf<C extends CommandContract> = z.infer<C["payload"]>;
