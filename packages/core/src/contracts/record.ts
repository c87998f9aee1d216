import type { z } from "zod";

/**
 * A kind of signed state record: something kept in S3 that makes nodes act when they read it
 * (a desired release; later backup and restore plans). A key may write one if it may send one of
 * the commands the record stands for: a record is a command at rest, under the same trust policy.
 */
export interface RecordContract<P = unknown> {
  type: string;
  summary: string;
  /** Command types whose senders may write this record. */
  actsAs: readonly string[];
  payload: z.ZodType<P>;
}

export function defineRecord<P>(contract: RecordContract<P>): RecordContract<P> {
  return contract;
}
