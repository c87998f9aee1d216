import { EventWatcher } from "@bosun/aws";
import type { Envelope, Refusal } from "@bosun/core";
import type { Context } from "../context.ts";

export interface EventsOptions {
  correlationId?: string | undefined;
  types?: string[] | undefined;
  signal: AbortSignal;
  onEvent: (item: { ok: true; envelope: Envelope } | { ok: false; refusal: Refusal }) => void;
}

/** Follows the bus until the signal aborts (Ctrl-C), handing each verified event to `onEvent`. */
export async function events(ctx: Context, options: EventsOptions): Promise<{ seen: number }> {
  const watcher = await EventWatcher.open(
    { clients: ctx.clients, verifier: await ctx.verifier() },
    {
      cluster: ctx.settings.cluster,
      topicArn: await ctx.topicArn(),
      // Renewed while it runs; a `bosun events` killed without a goodbye leaves a queue the sweep removes within the hour.
      leaseSeconds: 3600,
      ...(options.correlationId ? { correlationId: options.correlationId } : {}),
    },
  );
  let seen = 0;
  try {
    for await (const item of watcher.events(options.signal)) {
      if (item.ok && options.types && !options.types.includes(item.envelope.type)) continue;
      seen += 1;
      options.onEvent(item);
    }
  } finally {
    await watcher.close();
  }
  return { seen };
}

export function renderEvent(item: { ok: true; envelope: Envelope } | { ok: false; refusal: Refusal }): string {
  if (!item.ok) return `! unverified event refused: ${item.refusal.reason}: ${item.refusal.detail}`;
  const e = item.envelope;
  const p = e.payload as Record<string, unknown>;
  const node = (p["node"] as { id?: string } | undefined)?.id ?? "-";
  const rest = Object.entries(p)
    .filter(([k]) => k !== "node")
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
    .join(" ");
  return `${e.issuedAt} ${e.type.padEnd(9)} ${node.padEnd(12)} ${e.correlationId.slice(0, 8)} ${rest}`;
}
