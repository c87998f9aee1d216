import { randomBytes } from "node:crypto";
import { link, readFile, rm, writeFile } from "node:fs/promises";
import { ConfigError } from "./errors.ts";

/** Whether `pid` is a running Bosun process (its command line names Bosun's entry point). */
export async function isBosunProcess(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A recycled pid belongs to something else: look at what it runs where /proc tells.
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => undefined);
  return cmdline === undefined || /bosun|main\.ts/.test(cmdline);
}

/**
 * A lock held by one process at a time, across processes: a file naming the holder's pid,
 * created exclusively. A lock whose holder has died is taken over. `what` names the thing
 * guarded, for the error a second holder gets.
 */
export async function acquirePidLock(path: string, what: string): Promise<{ release(): Promise<void> }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
    await writeFile(tmp, `${process.pid}\n`);
    try {
      await link(tmp, path);
      return { release: () => releaseIfOurs(path) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    } finally {
      await rm(tmp, { force: true });
    }
    const holder = Number((await readFile(path, "utf8").catch(() => "")).trim());
    if (await isBosunProcess(holder)) {
      throw new ConfigError(`${what} is in use by another Bosun process (pid ${holder}, lock ${path}); stop it first`);
    }
    // Its holder is gone: remove the stale lock and try again.
    await rm(path, { force: true });
  }
  throw new ConfigError(`Could not take the lock ${path} for ${what}: other processes keep taking it`);
}

async function releaseIfOurs(path: string): Promise<void> {
  const holder = Number((await readFile(path, "utf8").catch(() => "")).trim());
  if (holder === process.pid) await rm(path, { force: true });
}

/**
 * Runs `fn` holding the lock at `path`, waiting while another live process holds it (polling,
 * as the holder may be any process), until `signal` aborts. `onWait` hears once that it waits.
 */
export async function withPidLock<T>(path: string, what: string, fn: () => Promise<T>, options: { signal?: AbortSignal; onWait?: (holder: string) => void } = {}): Promise<T> {
  let told = false;
  for (;;) {
    let lock: { release(): Promise<void> };
    try {
      lock = await acquirePidLock(path, what);
    } catch (error) {
      if (!(error instanceof ConfigError) || options.signal?.aborted) throw error;
      if (!told) options.onWait?.(error.message);
      told = true;
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  }
}
