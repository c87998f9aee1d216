import type { Settings } from "@bosun/core";

export type Retention = Settings["backups"]["retention"];

/** A snapshot as retention sees it: when it was taken, and whether its records prove it complete. */
export interface RetainedSnapshot {
  id: string;
  takenAt: Date;
  status: "complete" | "incomplete" | "refused";
  /** When its newest object was written: how long an incomplete snapshot has been left as it is. */
  lastWrittenAt: Date;
}

export interface RetentionPlan {
  keep: { id: string; reasons: string[] }[];
  remove: { id: string; reason: string }[];
  /** Left alone, and why: refused snapshots are evidence, and a young incomplete one may still be running. */
  leave: { id: string; reason: string }[];
  /** The oldest snapshot a restore inside the window starts from: binary-log segments from it onwards are needed too. */
  windowBase?: string;
}

/** How long an incomplete snapshot is left alone: a backup may take hours. */
const INCOMPLETE_GRACE_MS = 24 * 3600_000;

const periods = [
  { name: "hourly", key: (d: Date) => d.toISOString().slice(0, 13) },
  { name: "daily", key: (d: Date) => d.toISOString().slice(0, 10) },
  { name: "weekly", key: isoWeek },
  { name: "monthly", key: (d: Date) => d.toISOString().slice(0, 7) },
] as const;

/**
 * Grandfather-father-son retention, computed from the snapshots in the bucket alone: the newest
 * snapshot of each of the last `hourly` hours, `daily` days, `weekly` ISO weeks and `monthly`
 * months that have one; every snapshot inside the restore window (`windowDays`) and the newest
 * one before it, from which a restore to the window's first moment starts; and always the newest
 * of all. Only complete snapshots count. Incomplete ones older than a day are removed; refused
 * ones (records that fail their checks) are never removed automatically.
 */
export function retentionPlan(snapshots: readonly RetainedSnapshot[], retention: Retention, now: Date): RetentionPlan {
  const complete = snapshots.filter((s) => s.status === "complete").sort((a, b) => b.takenAt.getTime() - a.takenAt.getTime());
  const reasons = new Map<string, string[]>();
  const keep = (id: string, reason: string) => reasons.set(id, [...(reasons.get(id) ?? []), reason]);
  if (complete[0]) keep(complete[0].id, "newest");
  for (const period of periods) {
    const limit = retention[period.name];
    const seen = new Set<string>();
    for (const snapshot of complete) {
      const key = period.key(snapshot.takenAt);
      if (seen.has(key)) continue;
      if (seen.size >= limit) break;
      seen.add(key);
      keep(snapshot.id, `${period.name} ${key}`);
    }
  }
  const windowStart = now.getTime() - retention.windowDays * 86400_000;
  let windowBase: string | undefined;
  if (retention.windowDays > 0) {
    for (const snapshot of complete) {
      if (snapshot.takenAt.getTime() >= windowStart) {
        keep(snapshot.id, "inside the restore window");
        windowBase = snapshot.id;
      } else {
        keep(snapshot.id, "base of the restore window");
        windowBase = snapshot.id;
        break;
      }
    }
  }
  const plan: RetentionPlan = { keep: [], remove: [], leave: [], ...(windowBase ? { windowBase } : {}) };
  for (const snapshot of [...snapshots].sort((a, b) => b.takenAt.getTime() - a.takenAt.getTime())) {
    if (snapshot.status === "refused") plan.leave.push({ id: snapshot.id, reason: "its records fail their checks: inspect it (bosun backup show); never removed automatically" });
    else if (snapshot.status === "incomplete") {
      if (now.getTime() - snapshot.lastWrittenAt.getTime() > INCOMPLETE_GRACE_MS) plan.remove.push({ id: snapshot.id, reason: "never completed" });
      else plan.leave.push({ id: snapshot.id, reason: "incomplete, and may still be running" });
    } else if (reasons.has(snapshot.id)) plan.keep.push({ id: snapshot.id, reasons: reasons.get(snapshot.id)! });
    else plan.remove.push({ id: snapshot.id, reason: "outside every retention count and the restore window" });
  }
  return plan;
}

/** The ISO 8601 week of a date, as "2026-W49". */
function isoWeek(date: Date): string {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const day = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(d.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((d.getTime() - yearStart) / 86400_000 + 1) / 7);
  return `${d.getUTCFullYear()}-W${String(week).padStart(2, "0")}`;
}
