import { randomBytes } from "node:crypto";
import { link, open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

/** A temporary name beside `path`, unique to this call: concurrent writers never share one. */
function tempBeside(path: string): string {
  return `${path}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`;
}

async function writeSynced(path: string, data: string, mode = 0o640): Promise<void> {
  // "wx": the temporary name is new, and an existing file (or a planted link) is never followed.
  const file = await open(path, "wx", mode);
  try {
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** fsync on a directory makes a rename or link in it durable, not only the file's bytes. */
export async function syncDir(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces a file so that a crash leaves either the old content or the new, never a torn mix:
 * write a temporary file beside it, fsync it, rename(2) it over the old one, fsync the directory.
 */
export async function writeFileDurably(path: string, data: string, options: { mode?: number } = {}): Promise<void> {
  const tmp = tempBeside(path);
  try {
    await writeSynced(tmp, data, options.mode);
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await syncDir(dirname(path));
}

/**
 * Creates a file only if nothing exists at `path`, with its whole content or not at all:
 * the content is written and synced under a temporary name, then link(2)ed into place, which
 * fails with EEXIST when another writer (in this process or another) got there first.
 * Returns false when the file already existed.
 */
export async function createFileDurably(path: string, data: string, options: { mode?: number } = {}): Promise<boolean> {
  const tmp = tempBeside(path);
  try {
    await writeSynced(tmp, data, options.mode);
    await link(tmp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  } finally {
    await rm(tmp, { force: true });
  }
  await syncDir(dirname(path));
  return true;
}
