import { access, constants, mkdir, readFile, writeFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { join } from "node:path";
import type { BuildCgroupSettings } from "@bosun/core";

/** Where the cgroup v2 hierarchy and this process's place in it are read (other roots in tests). */
export interface CgroupPaths {
  /** The cgroup2 mount, /sys/fs/cgroup. */
  mount: string;
  /** /proc/self/cgroup. */
  self: string;
}

const system: CgroupPaths = { mount: "/sys/fs/cgroup", self: "/proc/self/cgroup" };

/** The builds' cgroup could not be made: the reason says what is missing. */
export class BuildCgroupUnavailable extends Error {
  readonly code = "BUILD_CGROUP_UNAVAILABLE";
}

/**
 * Makes the cgroup every build of this agent runs in, `build`, beside `agent`, below the cgroup
 * systemd delegates to the agent's unit (Delegate=yes), with limits on memory, CPU and tasks for
 * all builds together; returns its directory. cgroup v2 lets processes live only in leaves, so
 * the agent moves itself to `agent` before its own cgroup enables controllers for children.
 * Safe to call again. Not `systemd-run --slice`: starting a transient unit is a D-Bus call that
 * polkit can only allow for every unit at once, which would make the agent's user root's equal.
 */
export async function prepareBuildCgroup(limits: BuildCgroupSettings, paths: CgroupPaths = system): Promise<string> {
  const lines = (await readFile(paths.self, "utf8").catch(() => "")).trim().split("\n");
  const unified = lines.length === 1 && lines[0]!.startsWith("0::") ? lines[0]!.slice(3) : undefined;
  if (!unified) throw new BuildCgroupUnavailable(`this process is not in a cgroup v2 hierarchy (${paths.self}: ${JSON.stringify(lines.join(" | "))})`);
  // Once moved, this process's cgroup is the `agent` leaf of the delegated one.
  const delegated = join(paths.mount, unified.replace(/\/agent$/, ""));
  try {
    await access(join(delegated, "cgroup.subtree_control"), constants.W_OK);
  } catch {
    throw new BuildCgroupUnavailable(`cgroup ${delegated} is not delegated to this process's user (run the agent's unit with Delegate=yes)`);
  }
  const agent = join(delegated, "agent");
  const build = join(delegated, "build");
  await mkdir(agent, { recursive: true });
  await mkdir(build, { recursive: true });
  if (!unified.endsWith("/agent")) await writeFile(join(agent, "cgroup.procs"), String(process.pid));
  const available = (await readFile(join(delegated, "cgroup.controllers"), "utf8")).split(/\s+/);
  const wanted = ["cpu", "memory", "pids"].filter((c) => available.includes(c));
  if (wanted.length < 3) throw new BuildCgroupUnavailable(`cgroup ${delegated} offers the controllers ${JSON.stringify(available.join(" "))}; builds need cpu, memory and pids`);
  await writeFile(join(delegated, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
  await writeFile(join(build, "memory.max"), String(Math.floor((totalmem() * limits.memoryPercent) / 100)));
  const period = 100_000;
  await writeFile(join(build, "cpu.max"), `${(period * limits.cpuPercent) / 100} ${period}`);
  await writeFile(join(build, "pids.max"), String(limits.tasks));
  return build;
}

/**
 * The argument array that runs `argv` in the cgroup `dir`: a shell moves itself there (writing 0
 * to cgroup.procs moves the writer), then becomes the command, so nothing the build starts runs
 * outside it even for a moment. The script is fixed; the paths and the command are its arguments.
 */
export function inCgroup(dir: string, argv: readonly string[]): string[] {
  return ["/bin/sh", "-c", 'echo 0 > "$1" && shift && exec "$@"', "bosun-build", join(dir, "cgroup.procs"), ...argv];
}
