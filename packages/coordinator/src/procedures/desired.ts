import { SignedRecords, StateStore, stateKeys } from "@bosun/aws";
import { CommandFailedError, desiredReleaseRecord, type DesiredRelease } from "@bosun/core";
import type { Issuer } from "./issuer.ts";

/** The signed desired-release records of a cluster, as a publisher reads and writes them. */
export function desiredReleases(ctx: Issuer) {
  const records = new SignedRecords({ store: new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket }), trust: ctx.trust() });
  return {
    /** The app's desired release; a record that fails its checks stops the publisher, naming it. */
    async read(app: string): Promise<DesiredRelease | undefined> {
      const read = await records.read(stateKeys.release(app), desiredReleaseRecord);
      if (!read.ok) {
        throw new CommandFailedError(`The desired release of ${app} (${read.refusal.record}) is refused: ${read.refusal.reason}: ${read.refusal.detail}`);
      }
      return read.value;
    },

    /**
     * Records `make(current)` as desired unless a newer release (a higher sequence) was recorded
     * meanwhile by another publisher: two publishers at once never leave it naming the older one.
     */
    record(app: string, make: (current: DesiredRelease | undefined) => DesiredRelease): Promise<{ value: DesiredRelease | undefined; written: boolean }> {
      return records.update(stateKeys.release(app), desiredReleaseRecord, ctx.signer(), (current) => {
        const next = make(current);
        return current && current.sequence >= next.sequence ? undefined : next;
      });
    },

    /** Removes the record if it still names `sequence` (a first release that did not go through). */
    removeIf(app: string, sequence: number): Promise<boolean> {
      return records.removeIf(stateKeys.release(app), desiredReleaseRecord, (current) => current.sequence === sequence);
    },
  };
}
