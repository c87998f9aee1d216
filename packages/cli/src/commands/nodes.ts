import { StateStore } from "@bosun/aws";
import { loadNodeRecords, type NodeRecord } from "@bosun/coordinator";
import type { Context } from "../context.ts";
import { ago, table } from "../render.ts";

export interface NodesOptions {
  role?: string | undefined;
  all?: boolean | undefined;
}

/** The fleet as the coordinator last recorded it. Decommissioned nodes are left out unless --all. */
export async function nodes(ctx: Context, options: NodesOptions): Promise<NodeRecord[]> {
  const records = await loadNodeRecords(new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket }));
  return records.filter((n) => (options.all || n.status !== "down") && (!options.role || n.roles.includes(options.role)));
}

export function renderNodes(records: NodeRecord[]): string {
  if (records.length === 0) return "No nodes have reported yet. Start an agent (bosun agent) or a local fleet (bosun dev).";
  const now = Date.now();
  return table(
    records.map((n) => ({
      node: n.id,
      roles: n.roles,
      status: n.status,
      version: n.version,
      "last seen": ago(n.lastSeen, now),
      "last command": n.lastCommand ? `${n.lastCommand.type} ${n.lastCommand.outcome}` : undefined,
    })),
    ["node", "roles", "status", "version", "last seen", "last command"],
  );
}
