import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { link, lstat, mkdir, readlink, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { git } from "./git.ts";
import { walkTree } from "./tree.ts";

/** One entry of a commit's tree, as `git ls-tree -r -l` gives it. */
export interface GitEntry {
  mode: string;
  type: "blob" | "commit";
  object: string;
  /** Bytes, for blobs; 0 for submodules. */
  size: number;
  path: string;
}

/**
 * What a prepared release's files are: for each regular file still exactly as checked out
 * (a "pristine" file), its blob, mode, and the inode, size and mtime it had when it was
 * verified. A later release may hard-link such a file instead of writing and hashing it again.
 */
export interface ReleaseManifest {
  commit: string;
  files: Record<string, [blob: string, mode: string, ino: number, size: number, mtimeMs: number]>;
}

export interface CheckoutResult {
  entries: GitEntry[];
  /** Files hard-linked from the release reused, and files written from the mirror. */
  reused: number;
  written: number;
  /** The inode of each regular file, right after checkout: a later look tells whether it is still the same file. */
  inodes: Map<string, number>;
}

/** Every file of a commit, with sizes, from the mirror. */
export async function listTree(mirror: string, commit: string, signal: AbortSignal): Promise<GitEntry[]> {
  const out = await git([`--git-dir=${mirror}`, "ls-tree", "-r", "-l", "-z", "--full-tree", commit], { signal });
  const entries: GitEntry[] = [];
  for (const line of out.split("\0")) {
    if (!line) continue;
    const tab = line.indexOf("\t");
    const [mode, type, object, size] = line.slice(0, tab).trim().split(/\s+/) as [string, string, string, string];
    entries.push({ mode, type: type === "commit" ? "commit" : "blob", object, size: Number(size) || 0, path: line.slice(tab + 1) });
  }
  return entries;
}

const isRegular = (e: GitEntry) => e.type === "blob" && (e.mode === "100644" || e.mode === "100755");

/**
 * Writes a commit's tree into `dir` and checks that it is exactly that tree. Files a reusable
 * release holds unchanged (same blob and mode, still the very file that release verified) are
 * hard-linked from it; the rest are written from the mirror and hashed. Then no entry may be
 * missing or extra. Reused files cannot have changed: the agent never writes into a prepared
 * release, builds run as a user that cannot write the agent's files, and each one's inode,
 * size and mtime are checked against the manifest.
 */
export async function checkoutRelease(
  mirror: string,
  commit: string,
  dir: string,
  signal: AbortSignal,
  options: { entries?: GitEntry[]; reuse?: { dir: string; manifest: ReleaseManifest } | undefined } = {},
): Promise<CheckoutResult> {
  const entries = options.entries ?? (await listTree(mirror, commit, signal));
  const reuse = options.reuse;
  const me = process.getuid?.() ?? 0;
  const linked: GitEntry[] = [];
  const fresh: GitEntry[] = [];
  for (const entry of entries) {
    const known = reuse?.manifest.files[entry.path];
    if (!reuse || !known || !isRegular(entry) || known[0] !== entry.object || known[1] !== entry.mode) {
      fresh.push(entry);
      continue;
    }
    const info = await lstat(join(reuse.dir, entry.path)).catch(() => undefined);
    const same = info?.isFile() && info.uid === me && info.ino === known[2] && info.size === known[3] && info.mtimeMs === known[4];
    (same ? linked : fresh).push(entry);
  }

  await mkdir(dir, { recursive: true });
  const index = join(dir, "..", `.index-${commit}-${process.pid}`);
  try {
    const inIndex = (args: string[], input?: string) =>
      git([`--git-dir=${mirror}`, ...args], { signal, env: { GIT_INDEX_FILE: index, GIT_WORK_TREE: dir }, ...(input === undefined ? {} : { input }) });
    if (fresh.length > 0) {
      await inIndex(["read-tree", commit]);
      if (linked.length === 0) await inIndex(["checkout-index", "--all", "--force"]);
      else await inIndex(["checkout-index", "--force", "-z", "--stdin"], fresh.map((e) => `${e.path}\0`).join(""));
    }
  } finally {
    await rm(index, { force: true });
  }
  const parents = new Set(linked.map((e) => dirname(join(dir, e.path))));
  for (const parent of [...parents].sort()) await mkdir(parent, { recursive: true });
  await inBatches(linked, (e) => link(join(reuse!.dir, e.path), join(dir, e.path)));

  // Verify: every fresh entry hashes to its object, and the tree holds nothing else.
  const algorithm = commit.length === 64 ? "sha256" : "sha1";
  await inBatches(
    fresh.filter((e) => e.type === "blob"),
    async (e) => {
      const actual = await blobId(join(dir, e.path), e.mode === "120000", algorithm);
      if (actual !== e.object) throw new Error(`${e.path} was written as ${actual}, not commit ${commit}'s ${e.object}`);
    },
  );
  const expected = new Map(entries.map((e) => [e.path, e]));
  const inodes = new Map<string, number>();
  let seen = 0;
  for await (const found of walkTree(dir)) {
    const entry = expected.get(found.rel);
    // Directories are implied by the files below them; a submodule is at most an empty directory.
    if (found.dirent.isDirectory() && (!entry || entry.type === "commit")) continue;
    if (!entry) throw new Error(`${found.rel} is in the checked-out tree but not in commit ${commit}`);
    const kind = entry.mode === "120000" ? found.dirent.isSymbolicLink() : found.dirent.isFile();
    if (!kind) throw new Error(`${found.rel} is not the kind of entry commit ${commit} holds (${entry.mode})`);
    if (found.dirent.isFile()) {
      const info = await lstat(found.path);
      if (Boolean(info.mode & 0o100) !== (entry.mode === "100755")) throw new Error(`${found.rel} has the wrong mode for ${entry.mode}`);
      inodes.set(found.rel, info.ino);
    }
    seen += 1;
  }
  const files = entries.filter((e) => e.type === "blob").length;
  if (seen !== files) throw new Error(`the checked-out tree holds ${seen} of commit ${commit}'s ${files} files`);
  return { entries, reused: linked.length, written: fresh.length, inodes };
}

/**
 * The manifest of a prepared release: every regular file that is still the very file checked
 * out (same inode), owned by the agent, so that no build could have changed it. Call it
 * before the tree is taken back from the build user, when ownership still tells them apart.
 */
export async function pristineManifest(dir: string, commit: string, checkout: CheckoutResult): Promise<ReleaseManifest> {
  const me = process.getuid?.() ?? 0;
  const files: ReleaseManifest["files"] = {};
  for (const entry of checkout.entries) {
    if (!isRegular(entry)) continue;
    const info = await lstat(join(dir, entry.path)).catch(() => undefined);
    if (info?.isFile() && info.uid === me && info.ino === checkout.inodes.get(entry.path)) {
      files[entry.path] = [entry.object, entry.mode, info.ino, info.size, info.mtimeMs];
    }
  }
  return { commit, files };
}

/** Git's object id of a file's content (or, for a link, of its target), as `git hash-object` computes it. */
async function blobId(path: string, isLink: boolean, algorithm: "sha1" | "sha256"): Promise<string> {
  const hash = createHash(algorithm);
  if (isLink) {
    const target = Buffer.from(await readlink(path), "utf8");
    return hash.update(`blob ${target.length}\0`).update(target).digest("hex");
  }
  const { size } = await lstat(path);
  hash.update(`blob ${size}\0`);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Runs `fn` over items, 32 at a time: enough to keep the disk busy, few enough to keep file handles. */
async function inBatches<T>(items: readonly T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += 32) await Promise.all(items.slice(i, i + 32).map(fn));
}
