import type { StateStore } from "@bosun/aws";
import { stateKeys } from "@bosun/aws";
import type { Envelope, EventPayload, EventType, RoleReports } from "@bosun/core";

export type NodeStatus = "up" | "lost" | "down";

/** What the fleet knows of one node; kept in the fleet snapshot (state/fleet.json). */
export interface NodeRecord {
  id: string;
  roles: string[];
  status: NodeStatus;
  version?: string;
  startedAt?: string;
  lastSeen: string;
  inFlight?: number;
  /** What each of the node's roles last reported (web: the commit each app serves). */
  report?: RoleReports;
  downReason?: string;
  /** When the coordinator removed the queues and subscriptions this node left (gone past the grace period). */
  queuesRemovedAt?: string;
  lastCommand?: { id: string; type: string; outcome: "done" | "failed" | "refused"; at: string };
}

/** An event as the fleet state reads it: already verified, of a known type. */
export interface FleetEvent<T extends EventType = EventType> {
  type: T;
  issuedAt: string;
  correlationId: string;
  payload: EventPayload<T>;
}

export function fleetEvent(envelope: Envelope): FleetEvent {
  return { type: envelope.type as EventType, issuedAt: envelope.issuedAt, correlationId: envelope.correlationId, payload: envelope.payload as EventPayload<EventType> };
}

/** The outcome of one event: the node's record after it, and whether that record should be written. */
export interface Applied {
  record: NodeRecord;
  /** Something a person would see in `bosun nodes` changed (heartbeats also refresh last-seen). */
  changed: boolean;
}

/**
 * Fleet state as a pure function: a node's record (or none) and one event in, the new record
 * out. Events can arrive out of order; an older one never overwrites newer knowledge, except
 * a node-down, which is final for the run it names.
 */
export function applyEvent(known: NodeRecord | undefined, event: FleetEvent): Applied | undefined {
  const at = event.issuedAt;
  const ref = event.payload.node;
  // Events about no node (a coordinator's alert) change no node's record.
  if (!ref) return undefined;
  if (known && Date.parse(known.lastSeen) > Date.parse(at) && event.type !== "node-down") return undefined;
  const record: NodeRecord = known ? structuredClone(known) : { id: ref.id, roles: ref.roles, status: "up", lastSeen: at };
  record.roles = ref.roles;
  let changed = !known;
  const backUp = () => {
    changed ||= record.status !== "up";
    record.status = "up";
    delete record.downReason;
    // A node back after its queues were removed has made them again.
    delete record.queuesRemovedAt;
  };
  switch (event.type) {
    case "node-up": {
      const up = event.payload as EventPayload<"node-up">;
      backUp();
      changed ||= record.version !== up.version || record.startedAt !== up.startedAt;
      Object.assign(record, { version: up.version, startedAt: up.startedAt, report: up.report });
      break;
    }
    case "heartbeat": {
      const beat = event.payload as EventPayload<"heartbeat">;
      backUp();
      record.inFlight = beat.inFlight;
      changed ||= JSON.stringify(record.report ?? {}) !== JSON.stringify(beat.report);
      record.report = beat.report;
      break;
    }
    case "node-down": {
      const down = event.payload as EventPayload<"node-down">;
      if (down.reason === "decommissioned" || record.status === "up") {
        const status = down.reason === "decommissioned" ? "down" : "lost";
        changed ||= record.status !== status;
        record.status = status;
        record.downReason = down.reason;
      }
      break;
    }
    case "queues-removed": {
      // Said of a node that is gone: it changes nothing else, and is no sign of the node's life.
      if (record.status === "up") return undefined;
      record.queuesRemovedAt = at;
      return { record, changed: true };
    }
    case "done":
    case "failed":
    case "refused": {
      const payload = event.payload as { commandType?: string; type?: string; result?: { status?: string; app?: string; commit?: string } };
      record.lastCommand = { id: event.correlationId, type: payload.commandType ?? payload.type ?? "unknown", outcome: event.type, at };
      const result = payload.result;
      if (event.type === "done" && result?.status === "active" && result.app && result.commit) {
        record.report = { ...record.report, web: { ...record.report?.web, releases: { ...record.report?.web?.releases, [result.app]: result.commit } } };
      }
      changed = true;
      break;
    }
    default:
      break;
  }
  if (event.type !== "node-down") record.lastSeen = at;
  return { record, changed };
}

/** A node that has been silent for longer than `lostAfterMs` becomes lost; undefined when it is not. */
export function markLost(record: NodeRecord, now: number, lostAfterMs: number): NodeRecord | undefined {
  if (record.status !== "up" || now - Date.parse(record.lastSeen) <= lostAfterMs) return undefined;
  return { ...record, status: "lost", downReason: `no heartbeat since ${record.lastSeen}` };
}

/**
 * Nodes whose queues and subscriptions may go: lost or decommissioned, silent for longer than
 * the grace period, and not cleaned up already. A node that is up, or whose record the fleet
 * never had, is never among them.
 */
export function goneNodes(records: Iterable<NodeRecord>, now: number, graceMs: number): NodeRecord[] {
  return [...records].filter((r) => r.status !== "up" && r.queuesRemovedAt === undefined && now - Date.parse(r.lastSeen) > graceMs);
}

/** The commit an app serves on a node, as the node last reported it. */
export function servedRelease(record: NodeRecord, app: string): string | undefined {
  return record.report?.web?.releases[app];
}

/** The fleet as the coordinator last wrote it, in one object. */
export interface FleetSnapshot {
  writtenAt: string;
  /** The coordinator lease's epoch when it was written. */
  epoch: number;
  nodes: NodeRecord[];
}

export async function readFleet(store: StateStore): Promise<{ snapshot: FleetSnapshot; etag: string } | undefined> {
  const read = await store.getVersioned<FleetSnapshot>(stateKeys.fleet);
  return read ? { snapshot: read.value, etag: read.etag } : undefined;
}

/** The fleet's nodes, as the coordinator last recorded them: one read, whatever the fleet's size. */
export async function loadNodeRecords(store: StateStore): Promise<NodeRecord[]> {
  return ((await readFleet(store))?.snapshot.nodes ?? []).sort((a, b) => a.id.localeCompare(b.id));
}
