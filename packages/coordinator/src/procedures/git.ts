import { execFile } from "node:child_process";
import { commitPattern } from "@bosun/core";

/**
 * Resolves a ref (branch, tag, HEAD or a commit id) in a remote repository to one commit, on
 * the publisher's side, so every node deploys the same commit even if a branch moves. git runs
 * with an argument array, `--` before the repository, and no ambient GIT_* variables.
 */
export async function resolveRef(repo: string, ref: string, signal: AbortSignal): Promise<string> {
  if (commitPattern.test(ref)) return ref;
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("GIT_")) env[key] = value;
  const out = await new Promise<string>((resolve, reject) =>
    execFile("git", ["ls-remote", "--", repo, ref], { env, signal, encoding: "utf8" }, (error, stdout, stderr) =>
      error ? reject(new Error(stderr.trim() || error.message, { cause: error })) : resolve(stdout),
    ),
  );
  const lines = out.split("\n").filter(Boolean).map((l) => l.split("\t") as [string, string]);
  // Prefer an exact name, then a peeled tag (^{}), then the first match.
  const exact =
    lines.find(([, name]) => name === ref || name === `refs/heads/${ref}` || name === `refs/tags/${ref}^{}`) ??
    lines.find(([, name]) => name === `refs/tags/${ref}`) ??
    lines[0];
  if (!exact) throw new Error(`ref ${JSON.stringify(ref)} was not found in ${repo}`);
  return exact[0];
}
