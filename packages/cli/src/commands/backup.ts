import type { BackupDetail, BinlogVerifyResult, PruneResult, RecoveryPlan, SendResult, SnapshotSummary, VerifyResult } from "@bosun/coordinator";
import { ago, table } from "../render.ts";
import { renderSend } from "./send.ts";

export { backupNow, drillNow, listBackups, planRestore, pruneBackups, restoreNode, showBackup, verifyBackup, verifyBinlog } from "@bosun/coordinator";

export function bytes(n: number | undefined): string {
  if (n === undefined) return "-";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** What a node's done result says, for the line under the progress table. */
function resultLine(result: SendResult): string | undefined {
  const node = result.result?.nodes.find((n) => n.state === "done");
  const r = node?.result as Record<string, unknown> | undefined;
  if (!r) return undefined;
  if (typeof r["rtoMs"] === "number") return `Drill of ${String(r["snapshot"])}: every table matches; restored in ${(r["rtoMs"] / 1000).toFixed(1)} s (RTO), ${String(r["tables"])} tables`;
  if (r["joined"] === true) return `A backup was already running: this request waited for it. Snapshot ${String(r["snapshot"])}`;
  if (typeof r["storedBytes"] === "number") {
    return `Snapshot ${String(r["snapshot"])}: ${bytes(r["sourceBytes"] as number)} from the database, ${bytes(r["storedBytes"])} stored, in ${((r["durationMs"] as number) / 1000).toFixed(1)} s`;
  }
  const reached = r["reached"] as { file: string; position: number; gtid: string; lastTransactionAt?: string; transactions: number } | undefined;
  if (reached) {
    return `Restored ${String(r["snapshot"])} and replayed ${reached.transactions} transaction(s) from ${String(r["segments"])} segment(s) (${bytes(r["binlogBytes"] as number)}) to ${String(r["target"])}: the data stands at ${reached.file}:${reached.position}, GTID ${reached.gtid || "none"}${reached.lastTransactionAt ? `, last transaction at ${reached.lastTransactionAt}` : ""}; in ${((r["durationMs"] as number) / 1000).toFixed(1)} s (replay ${((r["replayMs"] as number) / 1000).toFixed(1)} s)`;
  }
  if (typeof r["restoredBytes"] === "number") return `Restored ${String(r["snapshot"])} (${bytes(r["restoredBytes"])}) in ${((r["durationMs"] as number) / 1000).toFixed(1)} s; server id ${String(r["serverId"])}`;
  return undefined;
}

export function renderOperation(result: SendResult, options: { withTable: boolean }): string {
  const line = resultLine(result);
  return [renderSend(result, options), ...(line ? [line] : [])].join("\n");
}

export function renderList(snapshots: SnapshotSummary[]): string {
  if (snapshots.length === 0) return "No snapshots yet: take one with bosun backup now.";
  const now = Date.now();
  return table(
    snapshots.map((s) => ({
      snapshot: s.snapshot,
      status: s.status,
      kind: s.kind,
      node: s.node,
      taken: ago(s.takenAt, now),
      stored: bytes(s.storedBytes),
      source: bytes(s.sourceBytes),
      encrypted: s.encrypted === undefined ? undefined : s.encrypted ? "yes" : "no",
      gtid: s.coordinates?.gtid,
      problem: s.problem,
    })),
    ["snapshot", "status", "kind", "node", "taken", "stored", "source", "encrypted", "gtid", "problem"],
  );
}

export function renderShow(detail: BackupDetail): string {
  const m = detail.manifest;
  const lines = [`Snapshot ${detail.snapshot}: ${detail.status}${detail.problem ? ` (${detail.problem})` : ""}`];
  if (m) {
    lines.push(
      `  taken on ${m.node} (${m.server.role}, server id ${m.server.id}, MariaDB ${m.server.version}), ${m.kind}, ${m.startedAt} → ${m.finishedAt}`,
      `  coordinates: ${m.coordinates.file}:${m.coordinates.position}, GTID ${m.coordinates.gtid || "-"}`,
      `  compression ${m.compression ?? "none"}, encryption ${m.encryption ? `${m.encryption.algorithm} key ${m.encryption.keyFingerprint}` : "none"}; ${bytes(m.sourceBytes)} from the database`,
      ...(m.ebs ? [`  EBS snapshot ${m.ebs.snapshotId} of ${m.ebs.volumeId}`] : []),
      ...m.objects.map((o) => `  object ${o.key}: ${bytes(o.bytes)}, sha256 ${o.sha256}`),
      `  tables: ${m.tables ? `${Object.keys(m.tables).length} with checksums` : "no checksums (taken on a primary, which kept writing)"}`,
      `  took ${(m.timings.snapshotMs / 1000).toFixed(1)} s (checksums ${(m.timings.checksumsMs / 1000).toFixed(1)} s${m.timings.lockMs !== undefined ? `, writes blocked ${m.timings.lockMs} ms` : ""})`,
    );
  }
  if (detail.completedAt) lines.push(`  completed ${detail.completedAt}`);
  lines.push(
    detail.drills.length
      ? `  drills: ${detail.drills.map((d) => `${d.finishedAt} on ${d.node} ${d.ok ? "ok" : "FAILED"}, RTO ${(d.rtoMs / 1000).toFixed(1)} s`).join("; ")}`
      : "  drills: none yet (bosun backup drill)",
  );
  return lines.join("\n");
}

export function renderVerify(result: VerifyResult): string {
  const lines = [`Snapshot ${result.snapshot}: ${result.ok ? "verified" : "NOT VERIFIED"}${result.problem ? `: ${result.problem}` : ""} (${(result.durationMs / 1000).toFixed(1)} s)`];
  for (const o of result.objects) lines.push(`  ${o.ok ? "ok" : "BAD"}  ${o.key} ${bytes(o.bytes)}${o.problem ? `: ${o.problem}` : ""}`);
  return lines.join("\n");
}

export function renderBinlogVerify(result: BinlogVerifyResult): string {
  if (result.chains.length === 0) return "No binary-log archive yet: a primary's agent ships one (db.shipping).";
  const lines: string[] = [];
  for (const c of result.chains) {
    const span = c.first && c.last ? `${c.first.file}:${c.first.start} (${c.first.at}) → ${c.last.file}:${c.last.end} (${c.last.at})` : "empty";
    lines.push(`Server ${c.server}: ${c.ok ? "whole" : "BROKEN"}, ${c.segments} segment(s), ${bytes(c.bytes)}, ${span} (${(c.durationMs / 1000).toFixed(1)} s)`);
    for (const p of c.problems) lines.push(`  BAD  ${p}`);
    if (c.unindexed.length) lines.push(`  note: ${c.unindexed.length} segment object(s) no index entry names (an upload cut off before its entry): not part of the chain`);
  }
  return lines.join("\n");
}

export function renderPrune(result: PruneResult): string {
  const verb = result.dryRun ? "Would remove" : "Removed";
  const lines = [`${verb} ${result.remove.length} snapshot(s), ${bytes(result.removedBytes)}; keeping ${result.keep.length}.`];
  for (const r of result.remove) lines.push(`  remove ${r.id}: ${r.reason}`);
  for (const k of result.keep) lines.push(`  keep   ${k.id}: ${k.reasons.join(", ")}`);
  for (const l of result.leave) lines.push(`  leave  ${l.id}: ${l.reason}`);
  if (result.windowBase) lines.push(`Restores inside the window start from ${result.windowBase} at the oldest.`);
  return lines.join("\n");
}

/** A point-in-time restore's plan, as --dry-run prints it. */
export function renderPlan(plan: RecoveryPlan): string {
  const s = plan.snapshot;
  const files = [...new Set(plan.segments.map((g) => g.file))];
  return [
    `Restore to ${plan.target}`,
    `  snapshot   ${s.id} (${s.kind}, ${bytes(s.sourceBytes)}, taken on ${s.node}; data as of ${s.consistentAt}, ${s.coordinates.file}:${s.coordinates.position}, GTID ${s.coordinates.gtid || "none"})`,
    `  binlog     ${plan.segments.length} segment(s) of ${plan.server}: ${plan.segments[0]!.seq} to ${plan.segments.at(-1)!.seq}, ${files.length === 1 ? files[0] : `${files[0]} to ${files.at(-1)}`}, events from ${plan.span.from} to ${plan.span.to}`,
    `  download   ${bytes(plan.binlogBytes)}${plan.headers.length ? ` (with ${plan.headers.length} file header segment(s))` : ""}; each segment is checked against its SHA-256 on the node before the server is touched`,
    `  estimate   about ${plan.estimate.seconds} s (${plan.estimate.basis})`,
  ].join("\n");
}
