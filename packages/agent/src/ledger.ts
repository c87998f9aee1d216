import { chmod, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { createFileDurably, writeFileDurably } from "./durable.ts";

export const ledgerStates = ["started", "done", "failed", "refused"] as const;

const entrySchema = z.object({
  id: z.string(),
  type: z.string(),
  state: z.enum(ledgerStates),
  sqsMessageId: z.string(),
  /** Which run of the agent wrote the entry: a `started` entry from an earlier run was interrupted. */
  bootId: z.string(),
  expiresAt: z.string(),
  updatedAt: z.string(),
  /** The terminal event's payload, re-published if the command is delivered again. */
  outcome: z.record(z.string(), z.unknown()).optional(),
});
export type LedgerEntry = z.infer<typeof entrySchema>;

/** Command ids are UUIDs, which are case-insensitive: one command, one file, whatever the case it came in. */
const idPattern = /^[0-9a-fA-F-]{36}$/;

/**
 * The node's durable memory of commands it has seen, one small file per command id,
 * written with fsync and rename so a crash leaves either the old or the new record.
 */
export class Ledger {
  readonly #dir: string;

  constructor(options: { dir: string }) {
    this.#dir = options.dir;
  }

  /** The ledger is the agent's alone: builds and other users on the node may not read it. */
  async open(): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    await chmod(this.#dir, 0o700);
    await mkdir(join(this.#dir, "dead-lettered"), { recursive: true });
  }

  /** SQS messages this node moved to its dead-letter queue (see ConsumerOptions.deadLettered). */
  readonly deadLettered = {
    has: (sqsMessageId: string): Promise<boolean> => stat(this.#deadLetterPath(sqsMessageId)).then(() => true, () => false),
    add: async (sqsMessageId: string): Promise<void> => void (await createFileDurably(this.#deadLetterPath(sqsMessageId), "")),
  };

  #deadLetterPath(sqsMessageId: string): string {
    return join(this.#dir, "dead-lettered", sqsMessageId.replace(/[^A-Za-z0-9-]/g, "_"));
  }

  async get(id: string): Promise<LedgerEntry | undefined> {
    if (!idPattern.test(id)) return undefined;
    let text: string;
    try {
      text = await readFile(this.#path(id), "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    return entrySchema.parse(JSON.parse(text));
  }

  /** Replaces a command's entry; only the run that holds the command may call it. */
  async put(entry: LedgerEntry): Promise<void> {
    await writeFileDurably(this.#checkedPath(entry.id), JSON.stringify(entry));
  }

  /**
   * Claims a command: creates its entry only if none exists, in this process or another.
   * Returns false when another delivery got there first; that one runs the command.
   */
  async create(entry: LedgerEntry): Promise<boolean> {
    return createFileDurably(this.#checkedPath(entry.id), JSON.stringify(entry));
  }

  /** Forgets one command, so its next delivery runs afresh (a handler asked to be retried). */
  async forget(id: string): Promise<void> {
    if (idPattern.test(id)) await rm(this.#path(id), { force: true });
  }

  /** Every entry, for the scan at start. */
  async entries(): Promise<LedgerEntry[]> {
    const names = (await readdir(this.#dir)).filter((n) => n.endsWith(".json"));
    const entries = await Promise.all(names.map((n) => this.get(n.slice(0, -5)).catch(() => undefined)));
    return entries.filter((e): e is LedgerEntry => e !== undefined);
  }

  /** Forgets entries whose commands have expired: a copy of those is refused as expired anyway. */
  async prune(olderThan: Date): Promise<number> {
    let removed = 0;
    // A message SQS could still deliver is at most 14 days old (the longest retention).
    const deadLetters = join(this.#dir, "dead-lettered");
    for (const name of await readdir(deadLetters).catch(() => [] as string[])) {
      const info = await stat(join(deadLetters, name)).catch(() => undefined);
      if (info && Date.now() - info.mtimeMs > 14 * 24 * 3600_000) await rm(join(deadLetters, name), { force: true });
    }
    for (const name of await readdir(this.#dir)) {
      if (name === "dead-lettered") continue;
      if (name.endsWith(".tmp")) {
        await rm(join(this.#dir, name), { force: true });
        continue;
      }
      const entry = await this.get(name.replace(/\.json$/, "")).catch(() => undefined);
      if (entry && Date.parse(entry.expiresAt) < olderThan.getTime()) {
        await rm(join(this.#dir, name), { force: true });
        removed += 1;
      }
    }
    return removed;
  }

  #path(id: string): string {
    return join(this.#dir, `${id.toLowerCase()}.json`);
  }

  #checkedPath(id: string): string {
    if (!idPattern.test(id)) throw new Error(`ledger ids are UUIDs, received ${JSON.stringify(id)}`);
    return this.#path(id);
  }
}
