import { StateStore } from "@bosun/aws";
import { desiredReleases, loadNodeRecords, servedRelease } from "@bosun/coordinator";
import type { DesiredRelease } from "@bosun/core";
import type { Context } from "../context.ts";
import { ago, table } from "../render.ts";

export interface ReleasesResult {
  app: string;
  desired?: DesiredRelease;
  nodes: { node: string; status: string; serving?: string; current: boolean; lastSeen: string }[];
}

/** The app's desired release and what each web node serves, from the node records. */
export async function releases(ctx: Context, options: { app: string }): Promise<ReleasesResult> {
  const store = new StateStore({ clients: ctx.clients }, { bucket: ctx.settings.bucket });
  const desired = await desiredReleases(ctx).read(options.app);
  const nodes = (await loadNodeRecords(store))
    .filter((n) => n.roles.includes("web") && n.status !== "down")
    .map((n) => {
      const serving = servedRelease(n, options.app);
      return { node: n.id, status: n.status, ...(serving ? { serving } : {}), current: Boolean(desired && serving === desired.commit), lastSeen: n.lastSeen };
    });
  return { app: options.app, ...(desired ? { desired } : {}), nodes };
}

export function renderReleases(result: ReleasesResult): string {
  const d = result.desired;
  const head = d
    ? `${result.app}: desired ${d.commit.slice(0, 12)} (${d.ref}${d.rollback ? ", rolled back" : ""}) published ${ago(d.publishedAt)} by ${d.issuer}`
    : `${result.app}: no release published yet`;
  const rows = result.nodes.map((n) => ({ node: n.node, status: n.status, serving: n.serving?.slice(0, 12), "on desired": n.current ? "yes" : "no", "last seen": ago(n.lastSeen) }));
  return `${head}\n${rows.length ? table(rows, ["node", "status", "serving", "on desired", "last seen"]) : "No web nodes."}`;
}
