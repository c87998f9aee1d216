import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { bundle, type Artifact } from "../build/bundle.ts";
import { spawnBosun } from "../packages/cli/src/children.ts";
import { TestFleet } from "./helpers/fleet.ts";

/** Runs the unpacked bundle with a bare environment, from its own folder. */
async function run(entry: string, args: string[], env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const proc = spawnBosun({ name: "bundle", main: entry, args, cwd: dirname(entry), env: { PATH: process.env["PATH"], HOME: process.env["HOME"], ...env }, onLine: (l, s) => (s === "stdout" ? out : err).push(l) });
  const { code } = await proc.exited;
  return { code, stdout: out.join("\n"), stderr: err.join("\n") };
}

function ancestorsWithNodeModules(dir: string): string[] {
  const found: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, "node_modules"))) found.push(d);
    if (dirname(d) === d) return found;
  }
}

describe("the bundle (npm run bundle)", () => {
  let built: string;
  let unpacked: string;
  let artifact: Artifact;
  let entry: string;

  before(async () => {
    built = await mkdtemp(join(tmpdir(), "bosun-bundle-"));
    unpacked = await mkdtemp(join(tmpdir(), "bosun-bundle-run-"));
    artifact = await bundle(join(built, "dist"));
    // As a node does: the tarball alone, unpacked where no node_modules is anywhere above.
    execFileSync("tar", ["-xzf", artifact.tarball, "-C", unpacked]);
    entry = join(unpacked, "package", "bosun.mjs");
  });
  after(async () => {
    await rm(built, { recursive: true, force: true });
    await rm(unpacked, { recursive: true, force: true });
  });

  it("is one tarball whose SHA-256 file matches it, holding an npm package with a bosun bin", async () => {
    const sha = createHash("sha256").update(await readFile(artifact.tarball)).digest("hex");
    assert.equal(await readFile(`${artifact.tarball}.sha256`, "utf8"), `${sha}  bosun.tgz\n`);
    // sha256sum, as the bootstrap checks it, agrees.
    execFileSync("sha256sum", ["--check", "--status", "bosun.tgz.sha256"], { cwd: dirname(artifact.tarball) });
    const pkg = JSON.parse(await readFile(join(unpacked, "package", "package.json"), "utf8")) as { bin: Record<string, string>; dependencies?: unknown };
    assert.deepEqual(pkg.bin, { bosun: "bosun.mjs" });
    assert.equal(pkg.dependencies, undefined, "the package needs no dependencies installed");
    assert.match(await readFile(entry, "utf8"), /^#!\/usr\/bin\/env -S node --max-semi-space-size=2\n/);
  });

  it("answers --help and --version with no node_modules anywhere above it", async () => {
    assert.deepEqual(ancestorsWithNodeModules(unpacked), []);
    const version = await run(entry, ["--version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^\d+\.\d+\.\d+$/);
    const help = await run(entry, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    for (const command of ["agent", "coordinator", "release", "backup", "nodes"]) assert.match(help.stdout, new RegExp(`^  ${command}\\b`, "m"));
    // A lazily loaded command module (each command is its own chunk) runs too.
    const keys = await run(entry, ["keys", "generate", "--id", "ci", "--allow", "release", "--dir", "k", "--trust", "k/trust.json", "--json"]);
    assert.equal(keys.code, 0, keys.stderr);
    assert.ok(existsSync(join(unpacked, "package", "k", "ci.key")));
  });

  it("reads its own JSON log lines as text with the pino-pretty it carries", async () => {
    const pretty = execFileSync(process.execPath, [join(unpacked, "package", "pino-pretty", "bin.cjs")], {
      cwd: unpacked,
      input: `${JSON.stringify({ level: 40, time: 0, pid: 7, name: "agent", msg: "node lost" })}\n`,
      encoding: "utf8",
    });
    assert.match(pretty, /WARN \(agent\/7\): node lost/);
  });

  it("says that bosun dev needs the source checkout, since the emulator is not in it", async () => {
    const dev = await run(entry, ["dev", "--port", "0", "--dir", "dev"]);
    assert.equal(dev.code, 3);
    assert.match(dev.stderr, /emulator \(the fauxqs package\) is not installed.*run `bosun dev` from a source checkout/);
    assert.equal(existsSync(join(unpacked, "package", "dev")), false, "nothing made before it says so");
  });

  it("runs an agent that answers a command, and the CLI, against the emulator", async () => {
    const fleet = await TestFleet.start({}, { main: entry });
    try {
      await fleet.startAgent("bundled-1", ["web"]);
      const probe = fleet.command("probe", {}, { nodes: ["bundled-1"] });
      await fleet.publish(probe);
      await fleet.waitForNodeEvent(probe.id, "bundled-1", "done", 20_000);
      const sent = await fleet.bosun(["send", "probe", "--target", "node:bundled-1", "--wait", "--timeout", "30", "--json"]);
      assert.equal(sent.code, 0, sent.stderr);
      assert.deepEqual((JSON.parse(sent.stdout) as { result: { nodes: { node: string; state: string }[] } }).result.nodes.map((n) => `${n.node}:${n.state}`), ["bundled-1:done"]);
    } finally {
      await fleet.close();
    }
  });
});
