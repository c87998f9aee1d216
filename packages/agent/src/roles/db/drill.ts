import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { backupKeys } from "@bosun/aws";
import type { DrillReport } from "@bosun/core";
import type { RoleServices } from "../../role.ts";
import { BackupFailed } from "./backup.ts";
import type { DatabaseEngine } from "./engine.ts";
import { roomFor, snapshotNeeds, snapshotStream, usableSnapshot, type Stage } from "./restore.ts";

/**
 * Proves a snapshot restores: into a scratch server of its own (never the node's server), with
 * every object checked as it streams, then every table's checksum compared with the one recorded
 * when the snapshot was taken. The time from the first byte to the last comparison is the RTO;
 * the report goes to S3 (signed by this node) whatever the outcome, and a mismatch fails the drill.
 */
export async function runDrill(services: RoleServices, engine: DatabaseEngine, request: Stage & { snapshot?: string }): Promise<DrillReport> {
  const { manifest, key } = await usableSnapshot(services, request.snapshot, { kinds: ["logical", "physical"] });
  const scratch = await engine.scratchDir();
  await roomFor(snapshotNeeds(manifest), [scratch]);
  const dir = await mkdtemp(join(scratch, "drill-"));
  const startedAt = services.clock.now();
  const started = Date.now();
  await request.progress(`restoring snapshot ${manifest.snapshot} into a scratch server`, 0);
  const stream = await snapshotStream(services, manifest, key, { ...request, base: 0 });
  let restored: Record<string, string | null>;
  if (manifest.kind === "physical") {
    const server = await engine.scratchServer("physical", { dir, signal: request.signal, physical: stream });
    restored = await server.checksums().finally(() => server.close());
  } else {
    const server = await engine.scratchServer("logical", { dir, signal: request.signal });
    try {
      await server.loadLogical(stream, request.signal);
      restored = await server.checksums();
    } finally {
      await server.close();
    }
  }
  const recorded = manifest.tables;
  const expected = recorded ?? Object.fromEntries(Object.keys(restored).map((t) => [t, null]));
  const mismatched = recorded
    ? Object.entries(recorded)
        .filter(([table, sum]) => table in restored && restored[table] !== sum)
        .map(([table, sum]) => ({ table, recorded: sum, restored: restored[table] ?? null }))
    : [];
  const missing = Object.keys(expected).filter((t) => !(t in restored));
  const extra = Object.keys(restored).filter((t) => !(t in expected));
  const report: DrillReport = {
    snapshot: manifest.snapshot,
    node: services.node.id,
    kind: manifest.kind,
    startedAt: startedAt.toISOString(),
    finishedAt: services.clock.now().toISOString(),
    rtoMs: Date.now() - started,
    restoredBytes: manifest.sourceBytes,
    checksumsRecorded: recorded !== null,
    tables: Object.keys(restored).length,
    mismatched,
    missing,
    extra,
    ok: mismatched.length === 0 && missing.length === 0 && extra.length === 0,
  };
  const stamp = report.finishedAt.replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  await services.store.put(backupKeys.drill(stamp, manifest.snapshot), services.signRecord("drill-report", report));
  if (!report.ok) {
    const what = [
      ...mismatched.map((m) => `${m.table} checksum ${m.restored} (recorded ${m.recorded})`),
      ...missing.map((t) => `${t} missing`),
      ...extra.map((t) => `${t} not in the snapshot's manifest`),
    ];
    throw new BackupFailed("DRILL_MISMATCH", `snapshot ${manifest.snapshot} did not restore as it was taken: ${what.slice(0, 5).join("; ")}${what.length > 5 ? ` and ${what.length - 5} more` : ""}`);
  }
  return report;
}
