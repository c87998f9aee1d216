import { z } from "zod";
import { PreconditionFailed, type StateStore } from "./state.ts";
import type { Clock } from "@bosun/core";

const leaseSchema = z.object({ holder: z.string(), epoch: z.number().int().positive(), expiresAt: z.iso.datetime() });
export type LeaseRecord = z.infer<typeof leaseSchema>;

/**
 * A lease in S3 that one holder at a time may hold: taken with a conditional write (If-None-Match
 * when there is none, If-Match on the ETag of an expired one), renewed with If-Match on the ETag
 * it last wrote, and given up with a conditional delete. S3 itself refuses every write made
 * against a version that is no longer current, so two holders never both believe they hold it
 * past one renewal, whatever their clocks say; expiry only decides when a silent holder may be
 * replaced (clocks kept by NTP, as on EC2).
 */
export class Lease {
  readonly #store: StateStore;
  readonly #clock: Clock;
  readonly #key: string;
  readonly #holder: string;
  readonly #ttlMs: number;
  #etag: string | undefined;
  #epoch = 0;

  constructor(deps: { store: StateStore; clock: Clock }, options: { key: string; holder: string; ttlMs: number }) {
    this.#store = deps.store;
    this.#clock = deps.clock;
    this.#key = options.key;
    this.#holder = options.holder;
    this.#ttlMs = options.ttlMs;
  }

  /** Counts takeovers: each new holder writes a higher epoch, and tags what it writes with it. */
  get epoch(): number {
    return this.#epoch;
  }

  get held(): boolean {
    return this.#etag !== undefined;
  }

  /** Takes the lease if nobody holds it or its holder let it expire. True when this holder has it now. */
  async acquire(): Promise<boolean> {
    if (this.#etag) return this.renew();
    const current = await this.#store.getVersioned<unknown>(this.#key);
    const record = current ? leaseSchema.safeParse(current.value) : undefined;
    const now = this.#clock.now().getTime();
    if (current && record?.success && record.data.holder !== this.#holder && Date.parse(record.data.expiresAt) > now) return false;
    const epoch = (record?.success ? record.data.epoch : 0) + 1;
    return this.#write(epoch, current ? { ifMatch: current.etag } : { ifNoneMatch: "*" });
  }

  /** Extends the lease; false when it was lost (someone else took it). */
  async renew(): Promise<boolean> {
    if (!this.#etag) return false;
    return this.#write(this.#epoch, { ifMatch: this.#etag });
  }

  /** Gives the lease up if this holder still has it, so a standby takes over at once. */
  async release(): Promise<void> {
    const etag = this.#etag;
    this.#etag = undefined;
    if (etag) await this.#store.delete(this.#key, { ifMatch: etag }).catch(() => undefined);
  }

  async #write(epoch: number, condition: { ifMatch: string } | { ifNoneMatch: "*" }): Promise<boolean> {
    const record: LeaseRecord = { holder: this.#holder, epoch, expiresAt: new Date(this.#clock.now().getTime() + this.#ttlMs).toISOString() };
    try {
      this.#etag = await this.#store.put(this.#key, record, condition);
      this.#epoch = epoch;
      return true;
    } catch (error) {
      if (!(error instanceof PreconditionFailed)) throw error;
      this.#etag = undefined;
      return false;
    }
  }
}
