import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadSettings } from "@bosun/core";

const made: string[] = [];
const noFile = async () => {
  const dir = await mkdtemp(join(tmpdir(), "bosun-config-"));
  made.push(dir);
  return dir;
};

describe("settings", () => {
  after(() => Promise.all(made.map((dir) => rm(dir, { recursive: true, force: true }))));

  it("has defaults when nothing is set", async () => {
    const settings = loadSettings({ env: {}, cwd: await noFile() });
    assert.equal(settings.cluster, "dev");
    assert.equal(settings.concurrency, 4);
    assert.equal(settings.visibilityTimeoutSeconds, 30);
  });

  it("names the variable and the value received when a BOSUN_* variable is bad", async () => {
    assert.throws(
      () => loadSettings({ env: { BOSUN_CONCURRENCY: "lots" }, cwd: tmpdir() }),
      (error: unknown) =>
        error instanceof ConfigError && /^Invalid BOSUN_CONCURRENCY: .* received "lots"$/.test(error.message),
    );
    assert.throws(() => loadSettings({ env: { BOSUN_CONCURRENCY: "0" }, cwd: tmpdir() }), /Invalid BOSUN_CONCURRENCY: .*received "0"/);
    assert.throws(() => loadSettings({ env: { BOSUN_CLUSTER: "Prod_1" }, cwd: tmpdir() }), /Invalid BOSUN_CLUSTER: expected 1-32 lower-case .*received "Prod_1"/);
    assert.throws(() => loadSettings({ env: { BOSUN_APPS: "{not json" }, cwd: tmpdir() }), /Invalid BOSUN_APPS: .*received "\{not json"/);
    assert.throws(
      () => loadSettings({ env: { BOSUN_APPS: JSON.stringify({ demo: { root: "/srv/demo", repos: ["--upload-pack=x"] } }) }, cwd: tmpdir() }),
      /Invalid BOSUN_APPS: a repository may not start with '-'/,
    );
  });

  it("names the file and setting when the config file is bad, and refuses unknown settings", async () => {
    const dir = await noFile();
    const file = join(dir, "bosun.json");
    await writeFile(file, JSON.stringify({ heartbeatSeconds: -5 }));
    assert.throws(() => loadSettings({ file, env: {} }), new RegExp(`Invalid setting "heartbeatSeconds" in ${file}: .*received -5`));
    await writeFile(file, JSON.stringify({ hartbeatSeconds: 5 }));
    assert.throws(() => loadSettings({ file, env: {} }), /Unknown setting "hartbeatSeconds"/);
    await writeFile(file, "{ nope");
    assert.throws(() => loadSettings({ file, env: {} }), /is not valid JSON/);
    assert.throws(() => loadSettings({ file: join(dir, "missing.json"), env: {} }), /Cannot read config file/);
  });

  it("lets the environment override the file and flags override both; file paths are relative to the file", async () => {
    const dir = await noFile();
    const file = join(dir, "bosun.json");
    await writeFile(file, JSON.stringify({ cluster: "from-file", concurrency: 2, stateDir: "state" }));
    const settings = loadSettings({ file, env: { BOSUN_CONCURRENCY: "8" }, overrides: { cluster: "from-flag" } });
    assert.equal(settings.cluster, "from-flag");
    assert.equal(settings.concurrency, 8);
    assert.equal(settings.stateDir, join(dir, "state"));
  });
});
