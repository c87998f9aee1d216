import logUpdate from "log-update";
import type { NodeProgress } from "@bosun/coordinator";
import { table } from "./render.ts";

/**
 * Shows per-node progress while a command runs: a live table on a terminal, one line per
 * change elsewhere (CI logs), nothing with --json.
 */
export function progressView(options: { json: boolean; title: string; stream?: NodeJS.WriteStream }): { update(nodes: NodeProgress[]): void; done(): void } {
  const stream = options.stream ?? process.stderr;
  if (options.json) return { update() {}, done() {} };
  if (stream.isTTY) {
    const started = Date.now();
    return {
      update(nodes) {
        const finished = nodes.filter((n) => ["done", "failed", "refused"].includes(n.state)).length;
        const width = 20;
        const filled = nodes.length ? Math.round((finished / nodes.length) * width) : 0;
        const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${finished}/${nodes.length} nodes, ${Math.round((Date.now() - started) / 1000)}s`;
        logUpdate(`${options.title}\n${bar}\n${renderProgress(nodes)}`);
      },
      done() {
        logUpdate.done();
      },
    };
  }
  const last = new Map<string, string>();
  return {
    update(nodes) {
      for (const n of nodes) {
        const line = `${n.node}: ${n.state}${n.detail ? ` (${n.detail})` : ""}`;
        if (last.get(n.node) !== line) {
          last.set(n.node, line);
          stream.write(`${line}\n`);
        }
      }
    },
    done() {},
  };
}

export function renderProgress(nodes: NodeProgress[]): string {
  if (nodes.length === 0) return "(no node has answered)";
  return table(
    nodes.map((n) => ({
      node: n.node,
      state: n.state,
      progress: n.fraction === undefined ? undefined : `${Math.round(n.fraction * 100)}%`,
      detail: n.detail,
      took: n.durationMs === undefined ? undefined : `${n.durationMs}ms`,
    })),
    ["node", "state", "progress", "took", "detail"],
  );
}
