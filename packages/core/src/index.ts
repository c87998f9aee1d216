export * from "./errors.ts";
export * from "./result.ts";
export * from "./config.ts";
export * from "./envelope.ts";
export * from "./signing.ts";
export * from "./trust.ts";
export * from "./parse.ts";
export * from "./records.ts";
export * from "./contracts/index.ts";
export * from "./message.ts";
export * from "./logger.ts";
export * from "./pidlock.ts";
export * from "./lifecycle.ts";
export * from "./path.ts";
export * from "./networks.ts";

export { BOSUN_VERSION } from "./version.ts";

/** A clock the code reads through, so tests can move time. */
export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };
