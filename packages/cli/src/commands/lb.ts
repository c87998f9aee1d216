import type { BalancerStatus, LbStatus, SendResult, TargetGroupStatus } from "@bosun/coordinator";
import type { TargetDrain } from "@bosun/aws";
import { ago, table } from "../render.ts";
import { renderSend } from "./send.ts";

export { balancerStatus, drainBackend, enableBackend } from "@bosun/coordinator";

export function renderStatus(status: LbStatus): string {
  const group = status.targetGroup && renderTargetGroup(status.targetGroup);
  const balancers = renderBalancers(status.balancers, group !== undefined);
  return [balancers, group].filter(Boolean).join("\n\n");
}

function renderTargetGroup(group: TargetGroupStatus): string {
  const head = `target group ${group.arn} (kept by the ${group.runBy}, deregistration delay ${group.deregistrationDelaySeconds} s)`;
  if (group.targets.length === 0) return `${head}\n  no targets`;
  const rows = group.targets.map((t) => ({ target: t.id, port: t.port, node: t.node ?? "", state: t.state, reason: t.reason ?? "" }));
  return `${head}\n${indent(table(rows, ["target", "port", "node", "state", "reason"]))}`;
}

const indent = (text: string) =>
  text
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");

function renderBalancers(balancers: BalancerStatus[], withTargetGroup: boolean): string {
  if (balancers.length === 0) return withTargetGroup ? "" : "No balancer nodes have reported yet: start an agent with --role balancer (bosun dev starts lb-1).";
  const now = Date.now();
  const lines: string[] = [];
  for (const b of balancers) {
    const r = b.report;
    lines.push(`${b.node} (${b.status}, seen ${ago(b.lastSeen, now)}): ${r ? `listening on ${r.listen}${r.pid ? `, haproxy pid ${r.pid}` : ""}` : "no report yet"}${r?.problem ? `; ${r.problem}` : ""}`);
    const p = r?.pair;
    if (p) lines.push(`  ${p.role.toUpperCase()} for ${p.entry}${p.holder ? `, held by ${p.holder}` : ", held by nobody"}; checks of ${p.peer} every ${p.intervalMs} ms, ${p.failedChecks} of ${p.threshold} failed in a row`);
    if (!r) continue;
    lines.push(
      r.backends.length === 0
        ? "  no backends"
        : indent(
            table(
              r.backends.map((s) => ({ backend: s.node, address: s.address, state: s.state, health: s.health, status: s.status, sessions: s.sessions })),
              ["backend", "address", "state", "health", "status", "sessions"],
            ),
          ),
    );
  }
  return lines.join("\n");
}

/** What each balancer answered to a drain: drained, or how many sessions were cut by the timeout. */
export function renderDrain(result: SendResult & { targetGroup?: TargetDrain }, options: { withTable: boolean }): string {
  const lines = [renderSend(result, options)];
  const t = result.targetGroup;
  if (t) lines.push(`target group: ${t.node} deregistered, ${t.drained ? "drained" : "still draining at the timeout"} after ${(t.waitedMs / 1000).toFixed(1)} s (deregistration delay ${t.delaySeconds} s)`);
  for (const n of result.result?.nodes ?? []) {
    const r = n.result as { node?: string; drained?: boolean; sessionsLeft?: number; waitedMs?: number } | undefined;
    if (r?.drained === undefined) continue;
    lines.push(`${n.node}: ${r.node} ${r.drained ? "drained" : `still had ${r.sessionsLeft} session(s) at the drain timeout`} after ${((r.waitedMs ?? 0) / 1000).toFixed(1)} s; out of rotation until bosun lb enable ${r.node}`);
  }
  return lines.join("\n");
}
