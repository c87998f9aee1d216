export * from "./errors.ts";
export * from "./result.ts";
export * from "./config.ts";
export * from "./envelope.ts";
export * from "./signing.ts";
export * from "./trust.ts";
export * from "./parse.ts";
export * from "./events.ts";
export * from "./message.ts";
export * from "./logger.ts";
export * from "./pidlock.ts";

export const BOSUN_VERSION = "0.1.0";

/** A clock the code reads through, so tests can move time. */
export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };

/** The release every web node of an app should serve, kept in S3 by publishers. */
export interface DesiredRelease {
  app: string;
  repo: string;
  commit: string;
  ref: string;
  /** Publish time in ms: nodes never replace a release with one of a lower sequence. */
  sequence: number;
  publishedAt: string;
  issuer: string;
  /** The commit that was desired before, for `bosun rollback` without --to. */
  previous?: string;
  rollback?: boolean;
}
