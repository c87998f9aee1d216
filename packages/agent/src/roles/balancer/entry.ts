import {
  Lease,
  claimElasticIp,
  describeElasticIp,
  releaseElasticIp,
  stateKeys,
  upsertARecord,
  type AwsClients,
  type Route53Provider,
  type StateStore,
} from "@bosun/aws";
import type { Clock, PairSettings } from "@bosun/core";

/** Who holds the entry point, as read now. */
export interface Holding {
  /** The holder's node id (an instance id for an Elastic IP), if anyone holds it. */
  holder?: string;
  /** What a takeover must find unchanged (the association id), so it replaces exactly this holding. */
  token?: string;
  /** For people: "eip eipalloc-0abc (203.0.113.10)", "route53 www.example.com → 203.0.113.10". */
  describe: string;
}

/**
 * The public entry point a pair of balancers shares, with the three operations the pair needs,
 * each a compare-and-swap on something AWS keeps, so two balancers never both hold it.
 */
export interface EntryPoint {
  read(): Promise<Holding>;
  /** Takes it over from what `seen` says; true when this node holds it now. */
  claim(seen: Holding): Promise<boolean>;
  /** The active's round: true while it still holds it. */
  keep(seen: Holding): Promise<boolean>;
  /** Gives it up (a clean stop, or this node's own HAProxy failing); true when it held it. */
  release(): Promise<boolean>;
}

/** An Elastic IP: its association is the holding; AWS allows one at a time. */
export function elasticIpEntry(clients: AwsClients, allocationId: string, node: string): EntryPoint {
  return {
    async read() {
      const address = await describeElasticIp(clients, allocationId);
      return {
        ...(address.instanceId ? { holder: address.instanceId } : {}),
        ...(address.associationId ? { token: address.associationId } : {}),
        describe: `eip ${allocationId}${address.publicIp ? ` (${address.publicIp})` : ""}`,
      };
    },
    claim: (seen) => claimElasticIp(clients, { allocationId, instanceId: node, from: seen.token }),
    keep: async (seen) => seen.holder === node,
    release: () => releaseElasticIp(clients, { allocationId, instanceId: node }),
  };
}

/**
 * A Route 53 A record. DNS cannot say who holds a name, so the holder is a lease in S3
 * (state/leases/lb-NAME.json, conditional writes): only the lease's holder writes the record,
 * the active renews the lease every round, and a standby can take the lease only once it has
 * expired (its holder stopped renewing: dead, or cut off from S3, in which case it learns it lost
 * at its next renewal and writes nothing more).
 */
export function route53Entry(
  deps: { route53: Route53Provider; store: StateStore; clock: Clock },
  options: { entry: Extract<PairSettings["entry"], { kind: "route53" }>; node: string; ttlMs: number },
): EntryPoint {
  const { entry, node } = options;
  const key = stateKeys.lease(`lb-${entry.name.replace(/\.$/, "")}`);
  const lease = new Lease({ store: deps.store, clock: deps.clock }, { key, holder: node, ttlMs: options.ttlMs });
  const describe = (address?: string) => `route53 ${entry.name}${address ? ` → ${address}` : ""}`;
  const point = () => upsertARecord(deps.route53, { hostedZoneId: entry.hostedZoneId, name: entry.name, address: entry.address, ttlSeconds: entry.ttlSeconds, comment: `bosun balancer ${node} (lease epoch ${lease.epoch})` });
  // The record is written on takeover and again every so many rounds, in case someone changed it by hand.
  let rounds = 0;
  return {
    async read() {
      const current = await deps.store.getVersioned<{ holder?: string; address?: string }>(key);
      const holder = current?.value.holder;
      return { ...(holder ? { holder } : {}), ...(current ? { token: current.etag } : {}), describe: describe(holder === node ? entry.address : undefined) };
    },
    async claim() {
      if (!(await lease.acquire())) return false;
      await point();
      rounds = 0;
      return true;
    },
    async keep() {
      // A restarted agent whose lease has not expired takes it again (the same holder may).
      if (!(await (lease.held ? lease.renew() : lease.acquire()))) return false;
      if (++rounds % 15 === 0) await point();
      return true;
    },
    async release() {
      const held = lease.held;
      await lease.release();
      return held;
    },
  };
}
