import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { retentionPlan, type RetainedSnapshot } from "@bosun/coordinator";

const at = (iso: string) => new Date(iso);
const complete = (id: string, iso: string): RetainedSnapshot => ({ id, takenAt: at(iso), status: "complete", lastWrittenAt: at(iso) });
const retention = (r: Partial<{ hourly: number; daily: number; weekly: number; monthly: number; windowDays: number }>) => ({ hourly: 0, daily: 0, weekly: 0, monthly: 0, windowDays: 0, ...r });

describe("retention (grandfather-father-son, from the bucket alone)", () => {
  const now = at("2026-12-01T12:30:00Z");
  // Every six hours for ten days, and one a month before that.
  const snapshots: RetainedSnapshot[] = [];
  for (let h = 0; h < 240; h += 6) {
    const t = new Date(now.getTime() - h * 3600_000 - 15 * 60_000);
    snapshots.push(complete(`s-${t.toISOString()}`, t.toISOString()));
  }
  snapshots.push(complete("old-october", "2026-10-15T03:00:00Z"), complete("old-september", "2026-09-15T03:00:00Z"), complete("old-june", "2026-06-15T03:00:00Z"));

  it("keeps the newest snapshot of each of the last N hours, days, weeks and months, and removes the rest", () => {
    const plan = retentionPlan(snapshots, retention({ hourly: 2, daily: 3, weekly: 2, monthly: 3 }), now);
    const kept = new Map(plan.keep.map((k) => [k.id, k.reasons]));
    // Hourly: the two newest hours with a snapshot; daily: the newest of each of the last three days.
    assert.deepEqual(kept.get(snapshots[0]!.id)?.sort(), ["daily 2026-12-01", "hourly 2026-12-01T12", "monthly 2026-12", "newest", "weekly 2026-W49"].sort());
    assert.ok(kept.get(snapshots[1]!.id)?.includes("hourly 2026-12-01T06"));
    assert.ok(kept.has("old-october") && kept.get("old-october")!.includes("monthly 2026-10"));
    assert.ok(!kept.has("old-june"), "four months back is past three monthly snapshots");
    assert.ok(plan.remove.some((r) => r.id === "old-june"));
    // Weekly: the newest of the previous ISO week.
    assert.ok([...kept.values()].flat().includes("weekly 2026-W48"));
    assert.equal(plan.keep.length + plan.remove.length, snapshots.length);
  });

  it("never removes a snapshot a restore inside the window needs: all inside it, and the newest before it", () => {
    const plan = retentionPlan(snapshots, retention({ windowDays: 2 }), now);
    const windowStart = now.getTime() - 2 * 86400_000;
    const inside = snapshots.filter((s) => s.takenAt.getTime() >= windowStart).map((s) => s.id);
    const base = snapshots.filter((s) => s.takenAt.getTime() < windowStart).sort((a, b) => b.takenAt.getTime() - a.takenAt.getTime())[0]!;
    const kept = plan.keep.map((k) => k.id);
    for (const id of inside) assert.ok(kept.includes(id), `${id} is inside the window`);
    assert.ok(kept.includes(base.id), "the snapshot the window's first moment restores from");
    assert.equal(plan.windowBase, base.id);
    assert.equal(kept.length, inside.length + 1);
  });

  it("always keeps the newest complete snapshot, even with every count at zero", () => {
    const plan = retentionPlan(snapshots, retention({}), now);
    assert.deepEqual(plan.keep.map((k) => k.id), [snapshots[0]!.id]);
  });

  it("removes incomplete snapshots only after a day, never refused ones, and does not count either as a backup", () => {
    const list: RetainedSnapshot[] = [
      { id: "young-incomplete", takenAt: at("2026-12-01T12:00:00Z"), status: "incomplete", lastWrittenAt: at("2026-12-01T12:10:00Z") },
      { id: "old-incomplete", takenAt: at("2026-11-20T00:00:00Z"), status: "incomplete", lastWrittenAt: at("2026-11-20T00:10:00Z") },
      { id: "refused", takenAt: at("2026-11-01T00:00:00Z"), status: "refused", lastWrittenAt: at("2026-11-01T00:00:00Z") },
      complete("only", "2026-11-30T00:00:00Z"),
    ];
    const plan = retentionPlan(list, retention({ hourly: 5 }), now);
    assert.deepEqual(plan.keep.map((k) => k.id), ["only"]);
    assert.deepEqual(plan.remove.map((r) => [r.id, r.reason]), [["old-incomplete", "never completed"]]);
    assert.deepEqual(plan.leave.map((l) => l.id).sort(), ["refused", "young-incomplete"]);
  });
});
