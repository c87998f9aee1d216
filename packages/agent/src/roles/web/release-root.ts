import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, readlink, rename, rm, stat, statfs, symlink } from "node:fs/promises";
import { basename, join } from "node:path";
import { z } from "zod";
import { commitPattern, errorSummary, withPidLock, type AppSettings, type BuildCgroupSettings, type Logger } from "@bosun/core";
import { runBuild } from "./build.ts";
import { checkoutRelease, listTree, pristineManifest, type CheckoutResult, type ReleaseManifest } from "./checkout.ts";
import { fetchCommit, FetchLimitError, freeBytes, mib } from "./git.ts";
import { checkTree, MARKER, PrepareError, writeMarker } from "./tree.ts";
import { probeHealth } from "./health.ts";
import { syncDir, writeFileDurably } from "../../durable.ts";
import { untilWallClock } from "@bosun/aws";

const stateSchema = z.object({
  /** Publish time (ms) of the release or rollback that made `current` current: older ones never replace it. */
  sequence: z.number().default(0),
  previous: z.string().optional(),
  /** When each release stopped being current: deleted after the grace period. */
  retired: z.record(z.string(), z.string()).default({}),
  /** Releases that failed their health check here: removed after the grace period, never counted as kept. */
  failed: z.array(z.string()).default([]),
  /** A swap in progress: written before the rename, cleared once the health verdict is in. */
  pending: z.object({ from: z.string().optional(), to: z.string() }).optional(),
});
export type RootState = z.infer<typeof stateSchema>;

export interface PrepareResult {
  /** The release was already prepared here: nothing was done. */
  reused: boolean;
  fetched: boolean;
  /** Files hard-linked from the current release, and files written from the mirror. */
  filesReused?: number;
  filesWritten?: number;
  buildMs?: number;
}

export type SwapOutcome =
  | { status: "active"; app: string; commit: string; previous?: string; swappedAt: number }
  | { status: "skipped"; app: string; commit: string; current?: string; reason: string }
  | { status: "failed"; error: string; code: string; current?: string }
  /** The agent is stopping: the swap stays pending and the resumed command probes again. */
  | { status: "interrupted" };

/**
 * One step at a time per deploy root: in this process (a promise chain per root) and across
 * processes (a lock file in the root), so `bosun agent --sync-once` and a running agent never
 * work on one app's releases at once.
 */
const locks = new Map<string, Promise<unknown>>();
function serialised<T>(root: string, log: Logger, fn: () => Promise<T>): Promise<T> {
  const run = (locks.get(root) ?? Promise.resolve())
    .catch(() => undefined)
    .then(async () => {
      await mkdir(root, { recursive: true });
      return withPidLock(join(root, ".lock"), `deploy root ${root}`, fn, { onWait: (holder) => log.info({ holder }, "waiting for the deploy root") });
    });
  locks.set(root, run);
  return run;
}

/**
 * An app's deploy root on a web node:
 *   releases/<commit>/   complete, verified (and built) trees, each with .bosun-release
 *   current -> releases/<commit>   replaced by one rename(2), so the site is never missing
 *   mirror.git/          bare mirror: a release fetches only new objects
 *   state.json           sequence of the current release, previous, retirement times
 */
export class ReleaseRoot {
  readonly app: string;
  readonly settings: AppSettings;
  readonly #log: Logger;
  /** Limits for all the node's builds together, in their own cgroup (setting buildCgroup); false for none. */
  readonly #buildCgroup: BuildCgroupSettings | false;

  constructor(deps: { logger: Logger }, options: { app: string; settings: AppSettings; buildCgroup?: BuildCgroupSettings | false }) {
    this.app = options.app;
    this.settings = options.settings;
    this.#buildCgroup = options.buildCgroup ?? false;
    this.#log = deps.logger.child({ app: options.app });
  }

  get root(): string {
    return this.settings.root;
  }
  get releasesDir(): string {
    return join(this.root, "releases");
  }
  get currentLink(): string {
    return join(this.root, "current");
  }

  /** The commit `current` points at, read from the link itself (the truth even after a crash). */
  async current(): Promise<string | undefined> {
    try {
      const target = basename(await readlink(this.currentLink));
      return commitPattern.test(target) ? target : undefined;
    } catch {
      return undefined;
    }
  }

  async readState(): Promise<RootState> {
    try {
      return stateSchema.parse(JSON.parse(await readFile(join(this.root, "state.json"), "utf8")));
    } catch {
      return stateSchema.parse({});
    }
  }

  async isPrepared(commit: string): Promise<boolean> {
    return stat(join(this.releasesDir, commit, MARKER)).then(
      () => true,
      () => false,
    );
  }

  /** Kept releases, newest first by directory time. */
  async releases(): Promise<string[]> {
    const names = (await readdir(this.releasesDir).catch(() => [] as string[])).filter((n) => commitPattern.test(n));
    const times = await Promise.all(names.map(async (n) => [n, (await stat(join(this.releasesDir, n))).mtimeMs] as const));
    return times.sort((a, b) => b[1] - a[1]).map(([n]) => n);
  }

  /**
   * Fetches, checks out, verifies and builds a commit into releases/<commit>. Work happens in a
   * temporary directory renamed into place at the end, so nothing half-written is ever a release.
   */
  prepare(repo: string, commit: string, signal: AbortSignal, log: Logger): Promise<PrepareResult> {
    return serialised(this.root, this.#log, async () => {
      if (!this.settings.repos.includes(repo)) throw new PrepareError("REPO_NOT_ALLOWED", `repository ${repo} is not on app ${this.app}'s allowlist`);
      if (await this.isPrepared(commit)) return { reused: true, fetched: false };
      await mkdir(this.releasesDir, { recursive: true });
      await mkdir(join(this.root, "manifests"), { recursive: true });
      await this.#removeLeftovers();
      const tmp = join(this.releasesDir, `.tmp-${commit}-${randomBytes(4).toString("hex")}`);
      const mirror = join(this.root, "mirror.git");
      const { limits } = this.settings;
      try {
        let fetched: boolean;
        try {
          ({ fetched } = await fetchCommit(mirror, repo, commit, signal, { maxBytes: limits.fetchMB * 1048576, minFreeBytes: limits.minFreeMB * 1048576 }));
        } catch (error) {
          if (error instanceof FetchLimitError) throw new PrepareError(error.code, `could not fetch ${commit} from ${repo}: ${error.message}`);
          throw new PrepareError("FETCH_FAILED", `could not fetch ${commit} from ${repo}: ${errorSummary(error)}`);
        }
        // Sized from the mirror before a byte is written out: too large, or no room, is said plainly.
        const entries = await listTree(mirror, commit, signal);
        const size = entries.reduce((total, e) => total + e.size, 0);
        if (size > limits.releaseMB * 1048576) {
          throw new PrepareError("RELEASE_TOO_LARGE", `release ${commit} holds ${mib(size)} of files, more than the app's limit of ${mib(limits.releaseMB * 1048576)} (limits.releaseMB)`);
        }
        const reuse = await this.#reuseSource();
        // Files the current release holds unchanged are linked, not written: they take no room.
        const needed = entries.filter((e) => reuse?.manifest.files[e.path]?.[0] !== e.object).reduce((total, e) => total + e.size, 0);
        const free = await freeBytes(this.root);
        if (free - needed < limits.minFreeMB * 1048576) {
          throw new PrepareError("NO_SPACE", `release ${commit} needs ${mib(needed)}; ${mib(free)} is free on ${this.root}, and ${mib(limits.minFreeMB * 1048576)} must stay free (limits.minFreeMB)`);
        }
        let checkout: CheckoutResult;
        try {
          checkout = await checkoutRelease(mirror, commit, tmp, signal, { entries, reuse });
        } catch (error) {
          // Git says "unable to write file" when the disk is full; the free space makes that plain.
          throw new PrepareError("CHECKOUT_FAILED", `could not check out ${commit}: ${errorSummary(error)} (${await freeSpace(this.root)})`);
        }
        log.info({ reused: checkout.reused, written: checkout.written, from: reuse?.manifest.commit }, "release checked out and verified");
        await checkTree(tmp);
        let buildMs: number | undefined;
        let manifest: ReleaseManifest | undefined;
        const build = this.settings.build;
        if (build) {
          log.info({ command: build.command, user: build.user }, "building release");
          const built = await runBuild(build, {
            cwd: tmp,
            signal,
            log,
            cgroup: this.#buildCgroup ? { limits: this.#buildCgroup } : undefined,
            // Only a build that cannot write the agent's files leaves files a later release may reuse.
            beforeTakeBack: async () => void (manifest = build.user === false ? undefined : await pristineManifest(tmp, commit, checkout)),
          });
          if (!built.ok) throw new PrepareError(built.code, built.error);
          buildMs = built.durationMs;
          // What the build made is checked as the repository's files were.
          await checkTree(tmp);
        } else manifest = await pristineManifest(tmp, commit, checkout);
        await writeMarker(tmp, commit);
        if (manifest) await writeFileDurably(this.#manifestPath(commit), JSON.stringify(manifest));
        await syncDir(tmp);
        await rename(tmp, join(this.releasesDir, commit));
        await syncDir(this.releasesDir);
        return { reused: false, fetched, filesReused: checkout.reused, filesWritten: checkout.written, ...(buildMs === undefined ? {} : { buildMs }) };
      } catch (error) {
        await rm(tmp, { recursive: true, force: true });
        await rm(this.#manifestPath(commit), { force: true });
        throw error;
      }
    });
  }

  /**
   * Makes `commit` current with one rename(2) of a fresh symlink over `current`, then probes the
   * site; a failed probe swaps straight back. A release or rollback older than the current one
   * (by publish sequence) is skipped: nodes never move backwards because messages crossed.
   */
  activate(commit: string, sequence: number, options: { signal: AbortSignal; log: Logger; swapAt?: number }): Promise<SwapOutcome> {
    return serialised(this.root, this.#log, async () => {
      const state = await this.readState();
      const current = await this.current();
      // An earlier run swapped and died before the health verdict: the release to fall back to is where that swap began.
      const origin = state.pending && state.pending.to === current ? state.pending.from : current;
      // Rollbacks carry a fresh sequence too, so an old rollback never undoes a newer release.
      if (sequence < state.sequence) {
        return { status: "skipped", app: this.app, commit, ...(current ? { current } : {}), reason: `a newer release (${current?.slice(0, 12) ?? "?"}) is already active` };
      }
      if (!(await this.isPrepared(commit))) {
        return { status: "failed", code: "NOT_PREPARED", error: `release ${commit} is not prepared on this node`, ...(current ? { current } : {}) };
      }
      if (current !== commit) await this.#writeState({ ...state, pending: { ...(origin ? { from: origin } : {}), to: commit } });
      // A fleet-wide activation names the moment to swap, so every node renames within a few ms
      // of the others however far apart the command reached them; a late node swaps at once.
      if (options.swapAt !== undefined) await untilWallClock(Math.min(options.swapAt, Date.now() + 60_000), options.signal);
      if (options.signal.aborted) {
        await this.#writeState(state);
        return { status: "interrupted" };
      }
      const swappedAt = Date.now();
      if (current !== commit) await this.#swap(commit);
      const { pending: _done, ...settled } = state;
      if (this.settings.health) {
        const health = await probeHealth(this.settings.health, commit, options.signal);
        if (options.signal.aborted) return { status: "interrupted" };
        if (!health.ok) {
          if (origin && origin !== commit) await this.#swap(origin);
          // A node's first release that fails goes back to what was there before: nothing.
          else if (!origin) await rm(this.currentLink, { force: true });
          await this.#writeState({
            ...settled,
            failed: [...new Set([...settled.failed, commit])],
            // It was served for a moment: requests reading it get the grace period to finish.
            retired: { ...settled.retired, [commit]: new Date().toISOString() },
          });
          options.log.warn({ error: health.error, restored: origin }, "health check failed after swap; swapped back");
          return { status: "failed", code: "HEALTH_CHECK_FAILED", error: `${health.error}; swapped back to ${origin?.slice(0, 12) ?? "nothing"}`, ...(origin ? { current: origin } : {}) };
        }
      }
      const retired = { ...settled.retired };
      delete retired[commit];
      if (origin && origin !== commit) retired[origin] = new Date().toISOString();
      const previous = origin && origin !== commit ? origin : settled.previous;
      await this.#writeState({ sequence, retired, failed: settled.failed.filter((c) => c !== commit), ...(previous ? { previous } : {}) });
      await this.prune(options.log);
      return { status: "active", app: this.app, commit, ...(origin && origin !== commit ? { previous: origin } : {}), swappedAt };
    });
  }

  /** Deletes releases beyond `keep`, never the current or previous one, each only after its grace period. */
  async prune(log: Logger): Promise<string[]> {
    const state = await this.readState();
    const current = await this.current();
    const protectedCommits = new Set([current, state.previous].filter(Boolean));
    const candidates = (await this.releases()).filter((c) => !protectedCommits.has(c));
    const failed = new Set(state.failed);
    const removable = [...candidates.filter((c) => !failed.has(c)).slice(this.settings.keep), ...candidates.filter((c) => failed.has(c))];
    const removed: string[] = [];
    const now = Date.now();
    for (const commit of removable) {
      const retiredAt = state.retired[commit];
      if (retiredAt && now - Date.parse(retiredAt) < this.settings.graceSeconds * 1000) continue;
      await rm(join(this.releasesDir, commit), { recursive: true, force: true });
      await rm(this.#manifestPath(commit), { force: true });
      removed.push(commit);
    }
    if (removed.length) {
      const gone = new Set(removed);
      const retired = Object.fromEntries(Object.entries(state.retired).filter(([c]) => !gone.has(c)));
      await this.#writeState({ ...state, retired, failed: state.failed.filter((c) => !gone.has(c)) });
      log.info({ removed }, "removed old releases");
    }
    return removed;
  }

  /**
   * The release a new one may hard-link unchanged files from: the current one, with the
   * manifest of its pristine files. None when builds run as the agent's own user.
   */
  async #reuseSource(): Promise<{ dir: string; manifest: ReleaseManifest } | undefined> {
    if (this.settings.build?.user === false) return undefined;
    const current = await this.current();
    if (!current) return undefined;
    try {
      const manifest = JSON.parse(await readFile(this.#manifestPath(current), "utf8")) as ReleaseManifest;
      return manifest.commit === current ? { dir: join(this.releasesDir, current), manifest } : undefined;
    } catch {
      return undefined;
    }
  }

  #manifestPath(commit: string): string {
    return join(this.root, "manifests", `${commit}.json`);
  }

  async #swap(commit: string): Promise<void> {
    const link = join(this.root, `.current-${randomBytes(4).toString("hex")}`);
    await symlink(join("releases", commit), link);
    await rename(link, this.currentLink);
    await syncDir(this.root);
  }

  async #writeState(state: RootState): Promise<void> {
    await writeFileDurably(join(this.root, "state.json"), JSON.stringify(state));
  }

  /** Half-made releases and swap links an interrupted agent left behind. */
  async #removeLeftovers(): Promise<void> {
    for (const name of await readdir(this.releasesDir)) {
      if (name.startsWith(".tmp-") || name.startsWith(".index-") || name.startsWith(".build-home-")) await rm(join(this.releasesDir, name), { recursive: true, force: true });
    }
    for (const name of await readdir(this.root)) {
      if (name.startsWith(".current-")) await rm(join(this.root, name), { force: true });
    }
    this.#log.debug("cleared leftovers of interrupted work");
  }
}

export { PrepareError };

async function freeSpace(path: string): Promise<string> {
  try {
    const fs = await statfs(path);
    return `${Math.floor((fs.bavail * fs.bsize) / 1024)} KiB free on ${path}`;
  } catch {
    return `free space on ${path} unknown`;
  }
}

