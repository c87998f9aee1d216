import { execFile } from "node:child_process";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";

export const commitPattern = /^[0-9a-f]{40}$/;

/**
 * Runs git with an argument array and the agent's abort signal. Called directly rather than
 * through simple-git: simple-git waits 50 ms after every command that prints nothing, and a
 * release runs several (measured: 56 ms against 8 ms per call, bench/release.ts).
 * Ambient GIT_* variables are dropped so only what we pass steers git.
 */
function git(args: string[], options: { signal: AbortSignal; env?: Record<string, string> }): Promise<string> {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("GIT_")) env[key] = value;
  return new Promise((resolve, reject) => {
    execFile("git", args, { env: { ...env, ...options.env }, signal: options.signal, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) reject(new Error(stderr.trim() || error.message, { cause: error }));
      else resolve(stdout);
    });
  });
}

/**
 * The node's bare mirror of an app's repository: releases fetch only the objects it lacks.
 * Returns whether anything had to be fetched.
 */
export async function fetchCommit(mirror: string, repo: string, commit: string, signal: AbortSignal): Promise<{ fetched: boolean }> {
  if (!(await exists(join(mirror, "HEAD")))) {
    await mkdir(mirror, { recursive: true });
    await git(["init", "--quiet", "--bare", mirror], { signal });
  }
  const inMirror = (args: string[]) => git([`--git-dir=${mirror}`, ...args], { signal });
  if (await hasCommit(inMirror, commit)) return { fetched: false };
  // `--` ends the options: a repository can never be read as one.
  try {
    await inMirror(["fetch", "--quiet", "--no-tags", "--", repo, commit]);
  } catch {
    // Some servers refuse a fetch by object id; take the branches and tags and look again.
    await inMirror(["fetch", "--quiet", "--prune", "--", repo, "+refs/heads/*:refs/bosun/heads/*", "+refs/tags/*:refs/bosun/tags/*"]);
  }
  if (!(await hasCommit(inMirror, commit))) throw new Error(`commit ${commit} is not in ${repo}`);
  // Keep what was fetched reachable, so `git gc` in the mirror never drops a release's objects.
  await inMirror(["update-ref", `refs/bosun/releases/${commit}`, commit]);
  return { fetched: true };
}

async function hasCommit(inMirror: (args: string[]) => Promise<string>, commit: string): Promise<boolean> {
  return inMirror(["cat-file", "-e", `${commit}^{commit}`]).then(
    () => true,
    () => false,
  );
}

/**
 * Writes the commit's tree into `dir` (no .git inside), then re-hashes every file there
 * and checks the result is exactly the commit's tree.
 */
export async function checkoutVerified(mirror: string, commit: string, dir: string, signal: AbortSignal): Promise<void> {
  await mkdir(dir, { recursive: true });
  const index = join(dir, "..", `.index-${commit}-${process.pid}`);
  const verifyIndex = `${index}.verify`;
  const withIndex = (file: string) => (args: string[]) =>
    git([`--git-dir=${mirror}`, ...args], { signal, env: { GIT_INDEX_FILE: file, GIT_WORK_TREE: dir } });
  try {
    const checkout = withIndex(index);
    await checkout(["read-tree", commit]);
    await checkout(["checkout-index", "--all", "--force"]);
    const verify = withIndex(verifyIndex);
    await verify(["add", "--all", "--force", "--", "."]);
    const actual = (await verify(["write-tree"])).trim();
    const expected = (await verify(["rev-parse", `${commit}^{tree}`])).trim();
    if (actual !== expected) throw new Error(`checked-out tree ${actual} is not commit ${commit}'s tree ${expected}`);
  } finally {
    await rm(index, { force: true });
    await rm(verifyIndex, { force: true });
  }
}

/** Resolves a ref (branch, tag, HEAD or a commit id) in a remote repository to one commit, on the publisher's side. */
export async function resolveRef(repo: string, ref: string, signal: AbortSignal): Promise<string> {
  if (commitPattern.test(ref)) return ref;
  const out = await git(["ls-remote", "--", repo, ref], { signal });
  const lines = out.split("\n").filter(Boolean).map((l) => l.split("\t") as [string, string]);
  // Prefer an exact name, then a peeled tag (^{}), then the first match.
  const exact =
    lines.find(([, name]) => name === ref || name === `refs/heads/${ref}` || name === `refs/tags/${ref}^{}`) ??
    lines.find(([, name]) => name === `refs/tags/${ref}`) ??
    lines[0];
  if (!exact) throw new Error(`ref ${JSON.stringify(ref)} was not found in ${repo}`);
  return exact[0];
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
