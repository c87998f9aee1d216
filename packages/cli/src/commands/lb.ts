import type { BalancerStatus, SendResult } from "@bosun/coordinator";
import { ago, table } from "../render.ts";
import { renderSend } from "./send.ts";

export { balancerStatus, drainBackend, enableBackend } from "@bosun/coordinator";

export function renderStatus(balancers: BalancerStatus[]): string {
  if (balancers.length === 0) return "No balancer nodes have reported yet: start an agent with --role balancer (bosun dev starts lb-1).";
  const now = Date.now();
  const lines: string[] = [];
  for (const b of balancers) {
    const r = b.report;
    lines.push(`${b.node} (${b.status}, seen ${ago(b.lastSeen, now)}): ${r ? `listening on ${r.listen}${r.pid ? `, haproxy pid ${r.pid}` : ""}` : "no report yet"}${r?.problem ? `; ${r.problem}` : ""}`);
    if (!r) continue;
    lines.push(
      r.backends.length === 0
        ? "  no backends"
        : table(
            r.backends.map((s) => ({ backend: s.node, address: s.address, state: s.state, health: s.health, status: s.status, sessions: s.sessions })),
            ["backend", "address", "state", "health", "status", "sessions"],
          )
            .split("\n")
            .map((l) => `  ${l}`)
            .join("\n"),
    );
  }
  return lines.join("\n");
}

/** What each balancer answered to a drain: drained, or how many sessions were cut by the timeout. */
export function renderDrain(result: SendResult, options: { withTable: boolean }): string {
  const lines = [renderSend(result, options)];
  for (const n of result.result?.nodes ?? []) {
    const r = n.result as { node?: string; drained?: boolean; sessionsLeft?: number; waitedMs?: number } | undefined;
    if (r?.drained === undefined) continue;
    lines.push(`${n.node}: ${r.node} ${r.drained ? "drained" : `still had ${r.sessionsLeft} session(s) at the drain timeout`} after ${((r.waitedMs ?? 0) / 1000).toFixed(1)} s; out of rotation until bosun lb enable ${r.node}`);
  }
  return lines.join("\n");
}
