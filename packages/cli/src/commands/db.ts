import type { DbClusterStatus } from "@bosun/coordinator";
import { ago, table } from "../render.ts";

export { dbStatus } from "@bosun/coordinator";

/** `bosun db status`: the nodes, then the archive and the restore window. */
export function renderDbStatus(status: DbClusterStatus): string {
  if (status.nodes.length === 0 && status.archives.length === 0) return "No db nodes have reported yet, and there is no binary-log archive: start an agent with --role db (bosun dev starts db-1 and db-2).";
  const now = Date.now();
  const lines = [
    `Primary: ${status.primary ?? "none up"}${status.promotion ? ("problem" in status.promotion ? ` (the promotion record is unreadable: ${status.promotion.problem})` : ` (promoted ${status.promotion.promotedAt}, generation ${status.promotion.generation})`) : ""}`,
    table(
      status.nodes.map((n) => ({
        node: n.node,
        status: n.status,
        role: `${n.role}${n.backupReplica ? " (backups)" : ""}`,
        threads: n.replication ? `io ${n.replication.io ? "yes" : "NO"}, sql ${n.replication.sql ? "yes" : n.replication.pausedForBackup ? "paused (backup)" : "NO"}` : undefined,
        lag: n.replication ? (n.replication.lagSeconds === null ? "-" : `${n.replication.lagSeconds} s`) : undefined,
        shipping: n.shipping && n.shipping.state !== "idle" ? `${n.shipping.state}, ${n.shipping.behindSeconds} s behind` : n.shipping?.state,
        seen: ago(n.lastSeen, now),
        problem: n.problem,
      })),
      ["node", "status", "role", "threads", "lag", "shipping", "seen", "problem"],
    ),
  ];
  if (status.shippingLag) {
    const since = status.shippingLag.secondsSinceLastSegment;
    lines.push(`Shipping lag: ${status.shippingLag.behindSeconds} s behind the primary's server${since === undefined ? "" : `; last durable segment ${since} s ago`}`);
  }
  for (const a of status.archives) {
    lines.push(`Archive ${a.server}${a.node ? ` (${a.node})` : ""}: ${a.problem ?? (a.lastSeq ? `${a.lastSeq} segments, events up to ${a.lastEventAt}, last shipped ${ago(a.lastShippedAt!, now)}` : "empty")}`);
  }
  lines.push(status.latestSnapshot ? `Latest snapshot: ${status.latestSnapshot.id} (${status.latestSnapshot.kind}, ${ago(status.latestSnapshot.at, now)})` : "Latest snapshot: none (bosun backup now)");
  if (status.oldestRestorePoint) lines.push(`Oldest point a restore can reach: ${status.oldestRestorePoint.at} (snapshot ${status.oldestRestorePoint.snapshot})`);
  return lines.join("\n");
}
