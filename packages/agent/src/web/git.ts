import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { simpleGit, type SimpleGit } from "simple-git";

export const commitPattern = /^[0-9a-f]{40}$/;

/** Environment variables our checkout sets for git; simple-git's guard blocks all others. */
const allowedGitEnv = ["GIT_INDEX_FILE", "GIT_WORK_TREE"];

function git(baseDir: string, signal: AbortSignal, env?: { GIT_INDEX_FILE: string; GIT_WORK_TREE: string }): SimpleGit {
  const g = simpleGit({ baseDir, abort: signal, maxConcurrentProcesses: 1, allowEnvironment: allowedGitEnv });
  if (!env) return g;
  const base: Record<string, string> = {};
  for (const key of ["PATH", "HOME", "LANG", "TMPDIR"]) if (process.env[key] !== undefined) base[key] = process.env[key]!;
  return g.env({ ...base, ...env });
}

/**
 * The node's bare mirror of an app's repository: releases fetch only the objects it lacks.
 * Returns whether anything had to be fetched.
 */
export async function fetchCommit(mirror: string, repo: string, commit: string, signal: AbortSignal): Promise<{ fetched: boolean }> {
  if (!(await exists(join(mirror, "HEAD")))) {
    await mkdir(mirror, { recursive: true });
    await git(mirror, signal).init(true);
  }
  const g = git(mirror, signal);
  if (await hasCommit(g, commit)) return { fetched: false };
  try {
    await g.raw(["fetch", "--quiet", "--no-tags", repo, commit]);
  } catch {
    // Some servers refuse a fetch by object id; take the branches and tags and look again.
    await g.raw(["fetch", "--quiet", "--prune", repo, "+refs/heads/*:refs/bosun/heads/*", "+refs/tags/*:refs/bosun/tags/*"]);
  }
  if (!(await hasCommit(g, commit))) throw new Error(`commit ${commit} is not in ${repo}`);
  // Keep what was fetched reachable, so `git gc` in the mirror never drops a release's objects.
  await g.raw(["update-ref", `refs/bosun/releases/${commit}`, commit]);
  return { fetched: true };
}

async function hasCommit(g: SimpleGit, commit: string): Promise<boolean> {
  try {
    await g.raw(["cat-file", "-e", `${commit}^{commit}`]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes the commit's tree into `dir` (no .git inside), then re-hashes every file there
 * and checks the result is exactly the commit's tree.
 */
export async function checkoutVerified(mirror: string, commit: string, dir: string, signal: AbortSignal): Promise<void> {
  await mkdir(dir, { recursive: true });
  const index = join(dir, "..", `.index-${commit}-${process.pid}`);
  const verifyIndex = `${index}.verify`;
  try {
    const g = git(mirror, signal, { GIT_INDEX_FILE: index, GIT_WORK_TREE: dir });
    await g.raw(["read-tree", commit]);
    await g.raw(["checkout-index", "--all", "--force"]);
    const v = git(mirror, signal, { GIT_INDEX_FILE: verifyIndex, GIT_WORK_TREE: dir });
    await v.raw(["add", "--all", "--force", "."]);
    const actual = (await v.raw(["write-tree"])).trim();
    const expected = (await v.raw(["rev-parse", `${commit}^{tree}`])).trim();
    if (actual !== expected) throw new Error(`checked-out tree ${actual} is not commit ${commit}'s tree ${expected}`);
  } finally {
    await rm(index, { force: true });
    await rm(verifyIndex, { force: true });
  }
}

/** Resolves a ref (branch, tag, HEAD or a commit id) in a remote repository to one commit, on the publisher's side. */
export async function resolveRef(repo: string, ref: string, signal: AbortSignal): Promise<string> {
  if (commitPattern.test(ref)) return ref;
  const out = await simpleGit({ abort: signal }).listRemote([repo, ref]);
  const lines = out.split("\n").filter(Boolean).map((l) => l.split("\t") as [string, string]);
  // Prefer an exact name, then a peeled tag (^{}), then the first match.
  const exact = lines.find(([, name]) => name === ref || name === `refs/heads/${ref}` || name === `refs/tags/${ref}^{}`) ??
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
