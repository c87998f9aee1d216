import type { Dirent } from "node:fs";
import { open, readdir, readlink, realpath } from "node:fs/promises";
import { isAbsolute, join, posix, relative, sep } from "node:path";
import { BosunError } from "@bosun/core";

/** A release could not be prepared on this node; `code` says at which step (REPO_NOT_ALLOWED, FETCH_FAILED, ...). */
export class PrepareError extends BosunError {}

/** Files Bosun itself writes into a release; a repository or a build may not bring them. */
export const MARKER = ".bosun-release";
const ownedPaths = new Set([MARKER]);

export interface TreeEntry {
  /** Path relative to the tree's root, with '/' separators. */
  rel: string;
  path: string;
  dirent: Dirent;
}

/**
 * Every entry below `root`, depth first, never following a symbolic link (fs.readdir's own
 * `recursive` does follow links to directories, so it must not be used on a repository's tree).
 */
export async function* walkTree(root: string, rel = ""): AsyncGenerator<TreeEntry> {
  for (const dirent of await readdir(join(root, rel), { withFileTypes: true })) {
    const entryRel = rel ? `${rel}/${dirent.name}` : dirent.name;
    yield { rel: entryRel, path: join(root, entryRel), dirent };
    if (dirent.isDirectory()) yield* walkTree(root, entryRel);
  }
}

/**
 * Refuses a tree that could make the site reach outside its release: a symbolic link that is
 * absolute, climbs out, points at nothing, or resolves outside; anything but files, directories
 * and links; and a path Bosun writes itself. Each refusal names the path.
 */
export async function checkTree(root: string): Promise<void> {
  const realRoot = await realpath(root);
  for await (const entry of walkTree(root)) {
    if (ownedPaths.has(entry.rel)) {
      throw new PrepareError("RESERVED_PATH", `the release holds ${entry.rel}, which Bosun writes itself; remove it from the repository and the build`);
    }
    if (entry.dirent.isSymbolicLink()) await checkLink(realRoot, root, entry);
    else if (!entry.dirent.isFile() && !entry.dirent.isDirectory()) {
      throw new PrepareError("UNSAFE_ENTRY", `${entry.rel} is neither a file, a directory nor a link; a release holds only those`);
    }
  }
}

async function checkLink(realRoot: string, root: string, entry: TreeEntry): Promise<void> {
  const target = await readlink(entry.path);
  const refuse = (why: string) => {
    throw new PrepareError("UNSAFE_LINK", `symbolic link ${entry.rel} -> ${target} ${why}; a release may only link to files inside itself`);
  };
  if (isAbsolute(target)) refuse("is absolute");
  // Lexically inside (no climbing out, whatever the links on the way resolve to) ...
  const lexical = posix.normalize(posix.join(posix.dirname(entry.rel), target));
  if (lexical === ".." || lexical.startsWith("../")) refuse("climbs out of the release");
  // ... and really inside, as the kernel resolves it now (a link to a link to '..' climbs too).
  let real: string;
  try {
    real = await realpath(entry.path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return refuse(code === "ELOOP" ? "loops" : "points at nothing in the release");
  }
  if (real !== realRoot && !real.startsWith(realRoot + sep)) refuse(`resolves to ${relative(root, real)}, outside the release`);
}

/**
 * Writes Bosun's marker naming the release's commit. Created exclusively: never through a link,
 * never over a file the tree brought (O_CREAT|O_EXCL does not follow links).
 */
export async function writeMarker(root: string, commit: string): Promise<void> {
  let file;
  try {
    file = await open(join(root, MARKER), "wx", 0o644);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") throw new PrepareError("RESERVED_PATH", `the release holds ${MARKER}, which Bosun writes itself`);
    throw error;
  }
  try {
    await file.writeFile(`${commit}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
}
