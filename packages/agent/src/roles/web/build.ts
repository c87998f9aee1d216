import { execFile, spawn } from "node:child_process";
import { lchown, lstat, chmod, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import type { AppSettings, BuildCgroupSettings, Logger } from "@bosun/core";
import { walkTree } from "./tree.ts";
import { inCgroup, prepareBuildCgroup, type CgroupPaths } from "./cgroup.ts";

export type BuildFailure = "BUILD_FAILED" | "BUILD_TIMEOUT" | "BUILD_ABORTED" | "BUILD_USER" | "BUILD_CGROUP";

/** The builds' cgroup, made at the first build that asks for it (one per process and hierarchy, shared by every app). */
const buildCgroups = new Map<string, Promise<string>>();
export type BuildResult = { ok: true; durationMs: number } | { ok: false; error: string; code: BuildFailure };

type BuildSettings = NonNullable<AppSettings["build"]>;

/** A user account, as the build runs under it. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
}

/** Looks a user up through the system's name service (files, LDAP...), with an argument array. */
export async function lookUpUser(name: string): Promise<Account | undefined> {
  try {
    const { stdout } = await promisify(execFile)("getent", ["passwd", "--", name], { encoding: "utf8" });
    const [, , uid, gid] = stdout.trim().split(":");
    return { name, uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

/**
 * Runs an app's build command in a prepared release. The build is the repository's code, so it
 * runs as its own unprivileged user (`build.user`), which cannot read the agent's keys or ledger
 * nor write anything but the tree it builds; with limits on processes, memory and file size
 * (prlimit(1)), a time limit, the agent's abort signal, a plain environment, and every output
 * line into the log. The tree's directories are handed to the build user for the build (it may
 * add, replace and remove files, not change the checked-out ones in place) and everything is
 * taken back after, so no build can change a release once it is built.
 */
export async function runBuild(
  build: BuildSettings,
  options: {
    cwd: string;
    signal: AbortSignal;
    log: Logger;
    /** Runs after the build, before the tree is taken back. */
    beforeTakeBack?: () => Promise<void>;
    /** Limits for all builds together, in their own cgroup (setting buildCgroup). */
    cgroup?: { limits: BuildCgroupSettings; paths?: CgroupPaths } | undefined;
  },
): Promise<BuildResult> {
  const started = performance.now();
  let cgroup: string | undefined;
  if (options.cgroup) {
    const key = JSON.stringify(options.cgroup);
    try {
      if (!buildCgroups.has(key)) buildCgroups.set(key, prepareBuildCgroup(options.cgroup.limits, options.cgroup.paths));
      cgroup = await buildCgroups.get(key)!;
    } catch (error) {
      buildCgroups.delete(key);
      // Asked for and not there: building without the limits could starve the web server.
      return { ok: false, code: "BUILD_CGROUP", error: `builds must run in their own cgroup (setting buildCgroup) and it cannot be made: ${(error as Error).message}` };
    }
  }
  let account: Account | undefined;
  let home: string | undefined;
  if (build.user !== false) {
    account = await lookUpUser(build.user);
    if (!account) return { ok: false, code: "BUILD_USER", error: `build user ${JSON.stringify(build.user)} does not exist on this node; create it (useradd --system bosun-build) or set the app's build.user` };
    try {
      // Directories only: the build may add, replace and remove files, but not change the agent's
      // files in place, so a file hard-linked from the release being served stays as it is.
      await chownTree(options.cwd, account.uid, account.gid, { directoriesOnly: true });
      // The build's own HOME and TMPDIR, beside the tree, so tools that cache or write there need nothing of ours.
      home = await mkdtemp(join(options.cwd, "..", ".build-home-"));
      await lchown(home, account.uid, account.gid);
    } catch (error) {
      await rm(home ?? "", { recursive: true, force: true }).catch(() => undefined);
      return { ok: false, code: "BUILD_USER", error: `cannot hand the release to build user ${build.user}: ${(error as Error).message} (the agent needs root, or the capabilities deploy/systemd/bosun-agent.service grants)` };
    }
  } else options.log.warn("build runs as the agent's own user (build.user is false): the repository's code can read this node's keys");

  try {
    const result = await spawnBuild(build, { cwd: options.cwd, signal: options.signal, log: options.log, account, cgroup, home: home ?? options.cwd });
    return result.ok ? { ok: true, durationMs: Math.round(performance.now() - started) } : result;
  } finally {
    if (home) await rm(home, { recursive: true, force: true }).catch(() => undefined);
    try {
      await options.beforeTakeBack?.();
    } finally {
      // Take the tree back whatever happened: a failed tree is removed by the agent, a good one is served.
      if (account) await chownTree(options.cwd, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
    }
  }
}

async function spawnBuild(
  build: BuildSettings,
  options: { cwd: string; signal: AbortSignal; log: Logger; account: Account | undefined; cgroup: string | undefined; home: string },
): Promise<BuildResult> {
  const limits = [`--nproc=${build.processes}`, `--data=${build.memoryMB * 1024 * 1024}`, `--fsize=${build.fileMB * 1024 * 1024}`, "--core=0"];
  const command = build.command;
  const limited = ["prlimit", ...limits, "--", ...command];
  // setpriv(1) switches to the build user and empties the inheritable and ambient capability
  // sets, so the capabilities the agent holds to hand trees over (deploy/systemd) never reach the build.
  const asUser = options.account
    ? ["setpriv", `--reuid=${options.account.uid}`, `--regid=${options.account.gid}`, "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all", "--", ...limited]
    : limited;
  // Into the builds' cgroup first, while still the agent's user, who may move processes there.
  const argv = options.cgroup ? inCgroup(options.cgroup, asUser) : asUser;
  const child = spawn(argv[0]!, argv.slice(1), { cwd: options.cwd, env: buildEnv(options.home), stdio: ["ignore", "pipe", "pipe"], detached: true });
  for (const stream of ["stdout", "stderr"] as const) {
    createInterface({ input: child[stream] }).on("line", (line) => options.log.info({ stream, line: line.slice(0, 2000) }, "build output"));
  }
  let why: "BUILD_TIMEOUT" | "BUILD_ABORTED" | undefined;
  // The build may start children of its own: signal the whole process group.
  const kill = (reason: "BUILD_TIMEOUT" | "BUILD_ABORTED") => {
    why ??= reason;
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
  };
  const timer = setTimeout(() => kill("BUILD_TIMEOUT"), build.timeoutSeconds * 1000);
  const onAbort = () => kill("BUILD_ABORTED");
  options.signal.addEventListener("abort", onAbort, { once: true });
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const exit = await new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.once("error", (error) => resolve({ code: null, error }));
    child.once("exit", (code) => resolve({ code }));
  });
  clearTimeout(timer);
  options.signal.removeEventListener("abort", onAbort);
  // Whatever the build left running in its group goes with it; then its output ends.
  if (child.pid) {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // The group is gone already.
    }
  }
  if (!exit.error) await closed;
  const shown = JSON.stringify(command);
  if (why === "BUILD_TIMEOUT") return { ok: false, code: why, error: `build ${shown} did not finish within ${build.timeoutSeconds}s and was killed` };
  if (why === "BUILD_ABORTED") return { ok: false, code: why, error: "build was interrupted by agent stop" };
  if (exit.error) {
    const code = (exit.error as NodeJS.ErrnoException).code === "EPERM" ? "BUILD_USER" : "BUILD_FAILED";
    return { ok: false, code, error: `build ${shown} could not start${options.account ? ` as ${options.account.name}` : ""}: ${exit.error.message}` };
  }
  if (exit.code !== 0) return { ok: false, code: "BUILD_FAILED", error: `build ${shown} exited with code ${exit.code}` };
  return { ok: true, durationMs: 0 };
}

/**
 * Gives every entry of a tree to a user, without following links (lchown), and takes away
 * set-id bits and write access for group and others.
 */
async function chownTree(root: string, uid: number, gid: number, options: { directoriesOnly?: boolean } = {}): Promise<void> {
  const me = process.getuid?.() ?? 0;
  const entries = [root];
  for await (const entry of walkTree(root)) if (!options.directoriesOnly || entry.dirent.isDirectory()) entries.push(entry.path);
  for (const path of entries) {
    const info = await lstat(path);
    // Modes are changed while the agent owns the entry, so it needs no CAP_FOWNER.
    const fix = !info.isSymbolicLink() && (info.mode & 0o6022) !== 0 ? () => chmod(path, info.mode & 0o7777 & ~0o6022) : async () => undefined;
    if (info.uid === me) await fix();
    await lchown(path, uid, gid);
    if (info.uid !== me) await fix();
  }
}

/** Builds run the repository's code: they get a plain environment, not the agent's settings or AWS credentials. */
function buildEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { HOME: home, TMPDIR: home };
  for (const key of ["PATH", "LANG", "LC_ALL", "TZ"]) if (process.env[key] !== undefined) env[key] = process.env[key];
  return env;
}
