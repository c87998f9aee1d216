import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { applyEvent, goneNodes, markLost, servedRelease, type FleetEvent, type NodeRecord } from "@bosun/coordinator";
import type { EventPayload, EventType } from "@bosun/core";

const node = { id: "web-1", roles: ["web"] };
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const event = <T extends EventType>(type: T, seconds: number, payload: Omit<EventPayload<T>, "node">, correlationId = "c"): FleetEvent => ({
  type,
  issuedAt: at(seconds),
  correlationId,
  payload: { node, ...payload } as unknown as EventPayload<EventType>,
});
const A = "a".repeat(40);
const B = "b".repeat(40);

/** Folds events into one node's record, as the coordinator does. */
function fold(events: FleetEvent[], start?: NodeRecord): NodeRecord | undefined {
  let record = start;
  for (const e of events) record = applyEvent(record, e)?.record ?? record;
  return record;
}

describe("fleet state, a pure function of events", () => {
  it("a node-up makes a record; heartbeats keep it up and carry what its roles report", () => {
    const record = fold([
      event("node-up", 1, { version: "0.1.0", startedAt: at(1), pid: 7, report: {} }),
      event("heartbeat", 2, { inFlight: 1, uptimeSeconds: 1, report: { web: { releases: { demo: A } } } }),
    ])!;
    assert.equal(record.status, "up");
    assert.equal(record.lastSeen, at(2));
    assert.equal(record.inFlight, 1);
    assert.equal(servedRelease(record, "demo"), A);
  });

  it("an event older than what is known changes nothing, except a node-down", () => {
    const known = fold([event("heartbeat", 10, { inFlight: 0, uptimeSeconds: 9, report: { web: { releases: { demo: B } } } })])!;
    assert.equal(applyEvent(known, event("heartbeat", 5, { inFlight: 3, uptimeSeconds: 4, report: { web: { releases: { demo: A } } } })), undefined);
    const down = applyEvent(known, event("node-down", 5, { reason: "decommissioned" }))!;
    assert.equal(down.record.status, "down");
    assert.equal(down.changed, true);
  });

  it("a lost node comes back with its next heartbeat; a decommissioned one is down", () => {
    const lost = fold([event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: {} }), event("node-down", 2, { reason: "lost", lastSeen: at(1) })])!;
    assert.equal(lost.status, "lost");
    const back = applyEvent(lost, event("heartbeat", 3, { inFlight: 0, uptimeSeconds: 3, report: {} }))!;
    assert.equal(back.record.status, "up");
    assert.equal(back.changed, true);
    assert.equal(back.record.downReason, undefined);
  });

  it("a command's result is the node's last command, and an activation updates what it serves", () => {
    const record = fold([
      event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: { web: { releases: { demo: A } } } }),
      event("done", 2, { commandType: "activate", durationMs: 5, result: { status: "active", app: "demo", commit: B } }, "cmd-1"),
    ])!;
    assert.deepEqual(record.lastCommand, { id: "cmd-1", type: "activate", outcome: "done", at: at(2) });
    assert.equal(servedRelease(record, "demo"), B);
  });

  it("does not change the record it is given", () => {
    const known = fold([event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: {} })])!;
    const copy = structuredClone(known);
    applyEvent(known, event("heartbeat", 2, { inFlight: 4, uptimeSeconds: 2, report: { web: { releases: { demo: A } } } }));
    assert.deepEqual(known, copy);
  });

  it("marks a node lost only once it has been silent for longer than the limit", () => {
    const record = fold([event("heartbeat", 0, { inFlight: 0, uptimeSeconds: 1, report: {} })])!;
    const t0 = Date.parse(at(0));
    assert.equal(markLost(record, t0 + 60_000, 60_000), undefined);
    assert.equal(markLost(record, t0 + 60_001, 60_000)?.status, "lost");
    assert.equal(markLost({ ...record, status: "down" }, t0 + 120_000, 60_000), undefined);
  });
});

describe("queues of gone nodes", () => {
  const lostAt = (seconds: number) => fold([event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: {} }), event("node-down", seconds, { reason: "lost" })])!;

  it("are due once a lost or decommissioned node has been silent past the grace period, never for a node that is up", () => {
    const lost = lostAt(5);
    const decommissioned = { ...fold([event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: {} }), event("node-down", 2, { reason: "decommissioned" })])!, id: "web-2" };
    const up = { ...fold([event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: {} })])!, id: "web-3" };
    const now = Date.parse(at(1)) + 60_000;
    assert.deepEqual(goneNodes([lost, decommissioned, up], now, 59_000).map((r) => r.id), ["web-1", "web-2"]);
    // Silence is counted from the last sign of life, not from when the node was declared lost.
    assert.deepEqual(goneNodes([lost, decommissioned, up], now, 60_000), []);
  });

  it("once removed are not due again, and a node that comes back is due again after it goes", () => {
    const removed = applyEvent(lostAt(5), event("queues-removed", 70, { status: "lost", lastSeen: at(1), queues: ["q"], subscriptions: [] }))!;
    assert.equal(removed.changed, true);
    assert.equal(removed.record.queuesRemovedAt, at(70));
    // Not a sign of life: last seen stays.
    assert.equal(removed.record.lastSeen, at(1));
    assert.deepEqual(goneNodes([removed.record], Date.parse(at(1)) + 3600_000, 1000), []);
    const back = applyEvent(removed.record, event("node-up", 80, { version: "0.1.0", startedAt: at(80), pid: 8, report: {} }))!.record;
    assert.equal(back.queuesRemovedAt, undefined);
    const goneAgain = applyEvent(back, event("node-down", 90, { reason: "lost" }))!.record;
    assert.deepEqual(goneNodes([goneAgain], Date.parse(at(80)) + 3600_000, 1000).map((r) => r.id), ["web-1"]);
  });

  it("a queues-removed said of a node that is up changes nothing", () => {
    const up = fold([event("heartbeat", 1, { inFlight: 0, uptimeSeconds: 1, report: {} })])!;
    assert.equal(applyEvent(up, event("queues-removed", 2, { status: "lost", lastSeen: at(1), queues: [], subscriptions: [] })), undefined);
  });
});
