import { open, rename } from "node:fs/promises";

/**
 * Replaces a file so that a crash leaves either the old content or the new, never a torn mix:
 * write a temporary file beside it, fsync it, then rename(2) it over the old one.
 */
export async function writeFileDurably(path: string, data: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const file = await open(tmp, "w");
  try {
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
}
