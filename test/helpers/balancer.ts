import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { TestProcess } from "./fleet.ts";
import { RuntimeApi } from "../../packages/agent/src/roles/balancer/runtime.ts";

/** Debian's HAProxy (in /usr/sbin, often off a user's PATH), or whatever `haproxy` the PATH has. */
export const haproxyProgram = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => existsSync(p)) ?? "haproxy";

/** Kills a balancer as a dying node would: its agent and its HAProxy (master and worker), no clean stop. */
export async function killBalancer(agent: TestProcess, haproxyDir: string): Promise<void> {
  const worker = await new RuntimeApi({ socket: join(haproxyDir, "admin.sock") }).pid();
  const master = Number.parseInt(await readFile(join(haproxyDir, "haproxy.pid"), "utf8"), 10);
  agent.child.kill("SIGKILL");
  await agent.exited;
  for (const pid of [master, worker]) if (existsSync(`/proc/${pid}`)) process.kill(pid, "SIGKILL");
}

/** BOSUN_BALANCER for a test's balancer: Debian's HAProxy in `dir`, listening on 127.0.0.1:`port`, with the test's own settings. */
export function balancerSettings(dir: string, port: number, settings: Record<string, unknown> = {}): string {
  return JSON.stringify({ haproxy: haproxyProgram, dir, listen: { host: "127.0.0.1", port }, ...settings });
}
