import { isIP } from "node:net";
import { z } from "zod";
import { addressSchema, inNetworks, type Address } from "@bosun/core";

/** What the balancer knows of one web node, from an event or from the fleet record. */
export interface WebFact {
  node: string;
  up: boolean;
  address?: Address;
  /** When it was true: an event's issue time, or when the fleet record was written. */
  at: number;
  source: "event" | "fleet";
  /** It left on purpose (decommissioned): drained before it goes, not cut. */
  graceful?: boolean;
}

/**
 * How long the coordinator may take to fold an event into the fleet record: a fleet record
 * written less than this after an event may not know it yet, so it does not overrule it.
 */
export const FLEET_LAG_MS = 15_000;

/**
 * The balancer's view of the web nodes, as a pure function: what it knew of a node and one new
 * fact in, what it knows now out. Events are the live truth (the newer of two wins); the fleet
 * record fills in what no event said, and overrules an event only when written well after it.
 */
export function applyFact(known: WebFact | undefined, fact: WebFact): WebFact {
  if (!known) return fact;
  if (fact.source === "event") return known.source === "fleet" || fact.at >= known.at ? fact : known;
  if (known.source === "fleet") return fact.at >= known.at ? fact : known;
  return fact.at - known.at > FLEET_LAG_MS ? fact : known;
}

/** The part of the coordinator's fleet record (state/fleet.json) a balancer reads. */
export const fleetRecordSchema = z.object({
  writtenAt: z.iso.datetime(),
  nodes: z.array(
    z.object({
      id: z.string(),
      roles: z.array(z.string()),
      status: z.enum(["up", "lost", "down"]),
      report: z.object({ web: z.object({ address: addressSchema.optional() }).passthrough().optional() }).passthrough().optional(),
    }),
  ),
});
export type FleetRecord = z.infer<typeof fleetRecordSchema>;

/** The fleet record's web nodes as facts. */
export function fleetFacts(record: FleetRecord): WebFact[] {
  const at = Date.parse(record.writtenAt);
  return record.nodes
    .filter((n) => n.roles.includes("web"))
    .map((n) => {
      const address = n.report?.web?.address;
      return { node: n.id, up: n.status === "up", ...(address ? { address } : {}), at, source: "fleet" as const };
    });
}

/** host:port as HAProxy takes it. */
export function serverAddress(address: Address): string {
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Which web nodes should be servers (name → address), and which are refused and why. */
export function desiredServers(facts: Iterable<WebFact>, networks: readonly string[]): { servers: Map<string, string>; refused: { node: string; reason: string }[] } {
  const servers = new Map<string, string>();
  const refused: { node: string; reason: string }[] = [];
  for (const fact of facts) {
    if (!fact.up) continue;
    const address = fact.address;
    if (!address) {
      refused.push({ node: fact.node, reason: "it reports no address (set web.advertise on the node)" });
      continue;
    }
    if (!inNetworks(address.host, networks)) {
      refused.push({ node: fact.node, reason: `its address ${address.host} is outside the allowed networks ${networks.join(", ")}` });
      continue;
    }
    servers.set(fact.node, serverAddress(address));
  }
  return { servers, refused };
}

/** What to do to bring HAProxy's servers to the desired ones; a server whose address changed is removed and added again. */
export function planServers(desired: ReadonlyMap<string, string>, actual: ReadonlyMap<string, string>): { add: [string, string][]; remove: string[] } {
  const add: [string, string][] = [];
  const remove: string[] = [];
  for (const [name, address] of actual) if (desired.get(name) !== address) remove.push(name);
  for (const [name, address] of desired) if (actual.get(name) !== address) add.push([name, address]);
  return { add: add.sort((a, b) => a[0].localeCompare(b[0])), remove: remove.sort() };
}
