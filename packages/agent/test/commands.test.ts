import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { roleLoaders, spineCommands, type CommandContext, type CommandDefinition, type CommandOutcome, type RoleServices } from "@bosun/agent";
import { settingsSchema, type Envelope } from "@bosun/core";
import { SiteRepo } from "../../../test/helpers/web.ts";
import { EventSpy, offlineServices } from "./helpers/pipeline.ts";

const log = pino({ level: "silent" });

/** Runs one handler in this process, as the pipeline would, with the payload checked by its contract. */
async function handle(definition: CommandDefinition<never>, payload: unknown, settings: Record<string, unknown>, options: { resumed?: boolean; signal?: AbortSignal; envelope?: Envelope } = {}) {
  const parsed = settingsSchema.parse(settings);
  const node = { id: "node-1", roles: ["web"] };
  const events = new EventSpy();
  const services: RoleServices = offlineServices({ node, settings: parsed, events, logger: log });
  const progress: string[] = [];
  const envelope = options.envelope ?? ({ id: randomUUID() } as Envelope);
  const ctx: CommandContext<never> = {
    payload: definition.payload.parse(payload) as never,
    envelope,
    node,
    signal: options.signal ?? new AbortController().signal,
    log,
    stateDir: parsed.stateDir,
    settings: parsed,
    resumed: options.resumed ?? false,
    services,
    progress: async (text) => void progress.push(text),
  };
  const outcome: CommandOutcome = await definition.handle(ctx);
  return { outcome, progress, envelope };
}

const spine = (type: string) => spineCommands.find((c) => c.type === type)!;

describe("the spine's command handlers", () => {
  let dir: string;
  before(async () => void (dir = await mkdtemp(join(tmpdir(), "bosun-commands-"))));
  after(() => rm(dir, { recursive: true, force: true }));

  it("probe records its command once, even when resumed after its effect", async () => {
    const first = await handle(spine("probe"), { note: "hello" }, { stateDir: dir });
    assert.equal(first.outcome.status, "done");
    const logged = await readFile(join(dir, "probe.log"), "utf8");
    assert.match(logged, new RegExp(`^${first.envelope.id} .* hello\\n$`));
    // The same command resumed after an agent died between the effect and its ledger entry.
    const again = await handle(spine("probe"), {}, { stateDir: dir }, { resumed: true, envelope: first.envelope });
    assert.deepEqual(again.outcome.status === "done" && again.outcome.result, { recorded: true, resumedAfterEffect: true });
    assert.equal((await readFile(join(dir, "probe.log"), "utf8")).split("\n").filter(Boolean).length, 1);
  });

  it("probe stops at once when the agent stops, and says so", async () => {
    const abort = new AbortController();
    abort.abort();
    const { outcome } = await handle(spine("probe"), { seconds: 60 }, { stateDir: dir }, { signal: abort.signal });
    assert.equal(outcome.status, "interrupted");
  });

  it("decommission asks the agent to leave the fleet once the command is settled", async () => {
    const { outcome } = await handle(spine("decommission"), { reason: "scale in" }, { stateDir: dir });
    assert.deepEqual(outcome, { status: "done", result: { decommissioned: true }, then: "decommission" });
  });
});

describe("the web role's command handlers", () => {
  let dir: string;
  let repo: SiteRepo;
  let web: ReturnType<Awaited<ReturnType<NonNullable<(typeof roleLoaders)["web"]>>>>;
  let settings: Record<string, unknown>;
  const command = (type: string) => web.commands.find((c) => c.type === type)!;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "bosun-web-commands-"));
    repo = await SiteRepo.create(join(dir, "repo"));
    settings = { stateDir: join(dir, "state"), apps: { demo: { root: join(dir, "www", "demo"), repos: [repo.dir] } } };
    const parsed = settingsSchema.parse(settings);
    web = (await roleLoaders["web"]!())(offlineServices({ node: { id: "node-1", roles: ["web"] }, settings: parsed, events: new EventSpy(), logger: log }));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("release prepares and, with activate, makes the release current; a later release is skipped when older", async () => {
    const a = await repo.commit({ "index.html": "a\n" });
    const { outcome, progress } = await handle(command("release"), { app: "demo", repo: repo.dir, commit: a, sequence: 10, activate: true }, settings);
    assert.equal(outcome.status, "done");
    assert.equal(outcome.status === "done" && (outcome.result as { status: string }).status, "active");
    assert.deepEqual(progress, [`preparing ${a.slice(0, 12)}`, `activating ${a.slice(0, 12)}`]);
    const b = await repo.commit({ "index.html": "b\n" });
    const older = await handle(command("release"), { app: "demo", repo: repo.dir, commit: b, sequence: 5, activate: true }, settings);
    assert.equal(older.outcome.status === "done" && (older.outcome.result as { status: string }).status, "skipped");
    assert.equal(await readFile(join(dir, "www", "demo", "current", "index.html"), "utf8"), "a\n");
  });

  it("each web command fails, saying why, for an app this node does not serve", async () => {
    for (const [type, payload] of [
      ["release", { app: "other", repo: repo.dir, commit: "a".repeat(40), sequence: 1 }],
      ["activate", { app: "other", commit: "a".repeat(40), sequence: 1 }],
      ["rollback", { app: "other", sequence: 1 }],
    ] as const) {
      const { outcome } = await handle(command(type), payload, settings);
      assert.deepEqual(outcome, { status: "failed", code: "APP_UNKNOWN", error: "app other is not configured on this node" }, type);
    }
  });

  it("release of a repository off the allowlist fails with REPO_NOT_ALLOWED", async () => {
    const { outcome } = await handle(command("release"), { app: "demo", repo: join(dir, "elsewhere"), commit: "a".repeat(40), sequence: 1 }, settings);
    assert.equal(outcome.status === "failed" && outcome.code, "REPO_NOT_ALLOWED");
  });

  it("rollback needs a kept release: it names what is kept when the one asked for is not", async () => {
    const { outcome } = await handle(command("rollback"), { app: "demo", to: "f".repeat(40), sequence: 100 }, settings);
    assert.equal(outcome.status === "failed" && outcome.code, "RELEASE_NOT_KEPT");
    assert.match(outcome.status === "failed" ? outcome.error : "", /is not kept on this node; kept: [0-9a-f]{12}/);
  });

  it("activate of a release not prepared here fails with NOT_PREPARED", async () => {
    const { outcome } = await handle(command("activate"), { app: "demo", commit: "e".repeat(40), sequence: 200 }, settings);
    assert.equal(outcome.status === "failed" && outcome.code, "NOT_PREPARED");
  });
});
