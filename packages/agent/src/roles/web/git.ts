import { execFile } from "node:child_process";
import { mkdir, readdir, rm, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import { abortableDelay } from "@bosun/aws";

/**
 * Runs git with an argument array and the agent's abort signal. Called directly rather than
 * through simple-git: simple-git waits 50 ms after every command that prints nothing, and a
 * release runs several (measured: 56 ms against 8 ms per call, bench/release.ts).
 * Ambient GIT_* variables are dropped so only what we pass steers git.
 */
export function git(args: string[], options: { signal: AbortSignal; env?: Record<string, string>; input?: string }): Promise<string> {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("GIT_")) env[key] = value;
  return new Promise((resolve, reject) => {
    const child = execFile("git", args, { env: { ...env, ...options.env }, signal: options.signal, maxBuffer: 256 * 1024 * 1024, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) reject(new Error(stderr.trim() || error.message, { cause: error }));
      else resolve(stdout);
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** How much a fetch may bring and how much room it must leave on the deploy root's filesystem. */
export interface FetchLimits {
  maxBytes: number;
  minFreeBytes: number;
}

/** No limit: for benchmarks that measure git itself. */
export const unlimitedFetch: FetchLimits = { maxBytes: Number.POSITIVE_INFINITY, minFreeBytes: 0 };

/** Why a fetch was stopped by its watchdog. */
export class FetchLimitError extends Error {
  readonly code: "FETCH_TOO_LARGE" | "NO_SPACE";
  constructor(code: "FETCH_TOO_LARGE" | "NO_SPACE", message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * The node's bare mirror of an app's repository: releases fetch only the objects it lacks.
 * Returns whether anything had to be fetched. A watchdog stops a fetch that grows past
 * `limits.maxBytes` or leaves less than `limits.minFreeBytes` free.
 */
export async function fetchCommit(mirror: string, repo: string, commit: string, signal: AbortSignal, limits: FetchLimits): Promise<{ fetched: boolean }> {
  if (!(await exists(join(mirror, "HEAD")))) {
    await mkdir(mirror, { recursive: true });
    await git(["init", "--quiet", "--bare", mirror], { signal });
  }
  const inMirror = (args: string[], s = signal) => git([`--git-dir=${mirror}`, ...args], { signal: s });
  if (await hasCommit(inMirror, commit)) return { fetched: false };
  const free = await freeBytes(mirror);
  if (free < limits.minFreeBytes) {
    throw new FetchLimitError("NO_SPACE", `${mib(free)} free on ${mirror}, less than the ${mib(limits.minFreeBytes)} a fetch must leave (limits.minFreeMB)`);
  }
  const packDir = join(mirror, "objects", "pack");
  const packsBefore = new Set(await readdir(packDir).catch(() => [] as string[]));
  const watch = new AbortController();
  const stopped = watchFetch(mirror, free, limits, watch);
  // fetch.unpackLimit=1 keeps whatever arrives in one pack file the watchdog can measure.
  // `--` ends the options: a repository can never be read as one.
  const fetch = (refspecs: string[]) => inMirror(["-c", "fetch.unpackLimit=1", "fetch", "--quiet", "--no-tags", "--", repo, ...refspecs], AbortSignal.any([signal, watch.signal]));
  try {
    try {
      await fetch([commit]);
    } catch (error) {
      if (watch.signal.aborted) throw error;
      // Some servers refuse a fetch by object id; take the branches and tags and look again.
      await fetch(["+refs/heads/*:refs/bosun/heads/*", "+refs/tags/*:refs/bosun/tags/*"]);
    }
  } catch (error) {
    if (watch.signal.aborted) {
      // A stopped fetch leaves its partial pack behind; it is no use to anyone.
      for (const name of await readdir(packDir).catch(() => [] as string[])) if (name.startsWith("tmp_")) await rm(join(packDir, name), { force: true });
      throw watch.signal.reason as Error;
    }
    throw error;
  } finally {
    watch.abort(new Error("fetch over"));
    await stopped;
  }
  // A fetch too quick for the watchdog is measured whole: the pack it left is removed if too large.
  const added = (await readdir(packDir)).filter((name) => !packsBefore.has(name));
  const addedBytes = (await Promise.all(added.filter((n) => n.endsWith(".pack")).map((n) => stat(join(packDir, n)).then((s) => s.size)))).reduce((a, b) => a + b, 0);
  if (addedBytes > limits.maxBytes) {
    await Promise.all(added.map((name) => rm(join(packDir, name), { force: true })));
    throw new FetchLimitError("FETCH_TOO_LARGE", `the fetch brought ${mib(addedBytes)}, more than the app's limit of ${mib(limits.maxBytes)} (limits.fetchMB); it was discarded`);
  }
  if (!(await hasCommit(inMirror, commit))) throw new Error(`commit ${commit} is not in ${repo}`);
  // Keep what was fetched reachable, so `git gc` in the mirror never drops a release's objects.
  await inMirror(["update-ref", `refs/bosun/releases/${commit}`, commit]);
  return { fetched: true };
}

/** Checks the incoming pack and the free space every quarter second until the fetch ends. */
async function watchFetch(mirror: string, freeAtStart: number, limits: FetchLimits, watch: AbortController): Promise<void> {
  const packDir = join(mirror, "objects", "pack");
  while (!watch.signal.aborted) {
    await abortableDelay(250, watch.signal);
    if (watch.signal.aborted) return;
    const incoming = await incomingBytes(packDir);
    const free = await freeBytes(mirror).catch(() => freeAtStart);
    if (incoming > limits.maxBytes) {
      watch.abort(new FetchLimitError("FETCH_TOO_LARGE", `the fetch had brought ${mib(incoming)} and was stopped: more than the app's limit of ${mib(limits.maxBytes)} (limits.fetchMB)`));
    } else if (free < limits.minFreeBytes) {
      watch.abort(new FetchLimitError("NO_SPACE", `the fetch was stopped with ${mib(free)} left on ${mirror}, less than the ${mib(limits.minFreeBytes)} it must leave (limits.minFreeMB)`));
    }
  }
}

async function incomingBytes(packDir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(packDir).catch(() => [] as string[])) {
    if (name.startsWith("tmp_")) total += await stat(join(packDir, name)).then((s) => s.size, () => 0);
  }
  return total;
}

export async function freeBytes(path: string): Promise<number> {
  const fs = await statfs(path);
  return fs.bavail * fs.bsize;
}

export function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 1 : 0)} MiB`;
}

async function hasCommit(inMirror: (args: string[]) => Promise<string>, commit: string): Promise<boolean> {
  return inMirror(["cat-file", "-e", `${commit}^{commit}`]).then(
    () => true,
    () => false,
  );
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
