import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { bundle, type Artifact } from "../build/bundle.ts";
import { needs } from "./helpers/tools.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const deploy = join(root, "deploy");
const bootstrap = join(deploy, "user-data", "bootstrap.sh");
const cloudConfig = join(deploy, "user-data", "cloud-config.yaml");
const boot = join(root, "test", "boot");

function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", fail);
    child.once("close", (code) => done({ code, stdout, stderr }));
  });
}

describe("the systemd units", () => {
  const tools = needs({ "systemd-analyze": "systemd" });

  /** systemd-analyze verify on copies that run /bin/true (it insists ExecStart exists); any warning counts. */
  async function verify(edit: (unit: string) => string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "bosun-units-"));
    try {
      const units = (await readdir(join(deploy, "systemd"))).filter((f) => /\.(service|slice)$/.test(f));
      for (const unit of units) await writeFile(join(dir, unit), edit((await readFile(join(deploy, "systemd", unit), "utf8")).replaceAll("/opt/bosun-node/bin/node", "/bin/true")));
      const result = await run("systemd-analyze", ["verify", ...units.map((u) => join(dir, u))]);
      return `${result.code === 0 ? "" : `exit ${result.code}\n`}${result.stderr}`.trim();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  it("verify without a warning, and run the bundle on the installed Node.js with builds in a delegated cgroup", { skip: tools.skip }, async () => {
    assert.equal(await verify((u) => u), "");
    // The control: a misspelt setting is reported, so the check can fail.
    assert.match(await verify((u) => u.replace("Delegate=yes", "Delegatee=yes")), /Unknown key 'Delegatee'/);
    for (const unit of ["bosun-agent", "bosun-sync", "bosun-coordinator"]) {
      const text = await readFile(join(deploy, "systemd", `${unit}.service`), "utf8");
      assert.match(text, /^ExecStart=\/opt\/bosun-node\/bin\/node --max-semi-space-size=2 \/opt\/bosun\/bosun\.mjs /m, unit);
      if (unit !== "bosun-coordinator") {
        assert.match(text, /^Delegate=yes$/m, unit);
        assert.match(text, /^Environment=BOSUN_BUILD_CGROUP=true$/m, unit);
        // It would make the delegated cgroup read-only.
        assert.doesNotMatch(text, /^ProtectControlGroups=/m, unit);
      }
    }
  });
});

describe("the cloud-config user-data", () => {
  const tools = needs({ "cloud-init": "cloud-init" });

  it("passes cloud-init schema, and a wrong type fails it", { skip: tools.skip }, async () => {
    const valid = await run("cloud-init", ["schema", "--config-file", cloudConfig]);
    assert.equal(valid.code, 0, valid.stdout + valid.stderr);
    assert.match(valid.stdout, /Valid cloud-config/);
    const dir = await mkdtemp(join(tmpdir(), "bosun-cloud-config-"));
    try {
      await writeFile(join(dir, "bad.yaml"), (await readFile(cloudConfig, "utf8")).replace("package_update: true", 'package_update: "yes"'));
      const invalid = await run("cloud-init", ["schema", "--config-file", join(dir, "bad.yaml")]);
      assert.notEqual(invalid.code, 0);
      assert.match(invalid.stdout + invalid.stderr, /package_update: 'yes' is not of type 'boolean'/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.ok((await readFile(cloudConfig)).length < 4096, "far under EC2's 16 KB");
  });
});

describe("the bootstrap, run as root in a mount namespace of its own", () => {
  const tools = needs({ unshare: "util-linux", sha256sum: "coreutils", xz: "xz-utils" });
  const notRoot = process.getuid?.() === 0 ? false : "the bootstrap runs as root (CI runs as root)";
  const skip = tools.skip || notRoot;
  let work: string;
  let artifact: Artifact;
  const cluster = "boot-test";

  before(async () => {
    if (skip) return;
    work = await mkdtemp(join(tmpdir(), "bosun-boot-"));
    artifact = await bundle(join(work, "dist"));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A node's view of the world: the bucket's dist/, a Node.js mirror, instance metadata; returns where it all is. */
  async function world(name: string, options: { roles: string; tamper?: boolean; blip?: boolean }): Promise<{ fake: string; root: string; env: NodeJS.ProcessEnv }> {
    const fake = join(work, name, "fake");
    const dist = join(fake, "s3", "dist");
    await mkdir(dist, { recursive: true });
    await cp(artifact.tarball, join(dist, "bosun.tgz"));
    await writeFile(join(dist, "bosun.tgz.sha256"), options.tamper ? `${"0".repeat(64)}  bosun.tgz\n` : await readFile(`${artifact.tarball}.sha256`));
    await writeFile(join(dist, "trust.json"), JSON.stringify({ keys: {} }));
    await writeFile(join(fake, "ssm"), "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n");
    if (options.blip) {
      await mkdir(join(fake, "fail-once"), { recursive: true });
      await writeFile(join(fake, "fail-once", "bosun.tgz"), "");
    }
    // The Node.js release: this Node, behind a script, in the official tarball's layout and checksum file.
    const version = process.version.slice(1);
    const base = `node-v${version}-linux-${process.arch === "arm64" ? "arm64" : "x64"}`;
    const staged = join(work, name, "node", base, "bin");
    await mkdir(staged, { recursive: true });
    await writeFile(join(staged, "node"), `#!/bin/sh\nexec ${process.execPath} "$@"\n`);
    await chmod(join(staged, "node"), 0o755);
    const mirror = join(fake, "node", `v${version}`);
    await mkdir(mirror, { recursive: true });
    execFileSync("tar", ["-cJf", join(mirror, `${base}.tar.xz`), "-C", join(work, name, "node"), base]);
    const sum = createHash("sha256").update(await readFile(join(mirror, `${base}.tar.xz`))).digest("hex");
    await writeFile(join(mirror, "SHASUMS256.txt"), `${"1".repeat(64)}  node-v${version}.tar.gz\n${sum}  ${base}.tar.xz\n`);
    const nodeRoot = join(work, name, "root");
    await mkdir(nodeRoot, { recursive: true });
    const env = {
      PATH: `${join(boot, "stubs")}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      FAKE: fake,
      FAKE_CLUSTER: cluster,
      FAKE_ROLES: options.roles,
      BOSUN_BUCKET: "bosun-boot-test",
      BOSUN_NODE_MIRROR: "http://node.mirror.test",
      BOSUN_NODE_VERSION: version,
    };
    return { fake, root: nodeRoot, env };
  }

  const bootstrapIn = (w: { root: string; env: NodeJS.ProcessEnv }, script = bootstrap) =>
    run("unshare", ["--mount", "--propagation", "private", "--", "bash", join(boot, "run-isolated.sh"), w.root, script], { env: w.env });

  it("installs Node.js and the checked bundle, writes settings and trust, and enables the web node's units, through a network blip", { skip }, async () => {
    const w = await world("web", { roles: "web", blip: true });
    const result = await bootstrapIn(w);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /attempt 1 of 'aws' failed; trying again in 2 s/);
    const upper = join(w.root, "upper");
    assert.equal(await readlink(join(upper, "opt", "bosun")), `/opt/bosun-releases/${artifact.sha256}`);
    assert.ok(existsSync(join(upper, "opt", "bosun-releases", artifact.sha256, "bosun.mjs")));
    assert.equal((await readFile(join(w.root, "bosun-version.txt"), "utf8")).trim(), JSON.parse(await readFile(join(root, "package.json"), "utf8")).version);
    for (const unit of ["bosun-agent.service", "bosun-sync.service", "bosun-coordinator.service"]) {
      assert.equal(await readFile(join(upper, "etc", "systemd", "system", unit), "utf8"), await readFile(join(deploy, "systemd", unit), "utf8"), unit);
    }
    assert.match(await readFile(join(upper, "etc", "bosun", "env"), "utf8"), new RegExp(`^BOSUN_CLUSTER=${cluster}$`, "m"));
    assert.equal(await readFile(join(upper, "etc", "bosun", "trust.json"), "utf8"), JSON.stringify({ keys: {} }));
    const calls = await readFile(join(w.fake, "calls.log"), "utf8");
    for (const call of ["systemctl enable bosun-sync.service", "systemctl start bosun-sync.service", "systemctl enable bosun-agent.service", "systemctl start bosun-agent.service"]) {
      assert.ok(calls.includes(call), `${call} in:\n${calls}`);
    }
    assert.ok(!calls.includes("enable bosun-coordinator.service"), calls);
  });

  it("from the cloud-config's command: the bootstrap the checked bundle carries sets up a coordinator", { skip: skip || needs({ python3: "python3-yaml" }).skip }, async () => {
    const w = await world("cloud-config", { roles: "coordinator" });
    // The command as cloud-init runs it: the third item of runcmd's first entry (bash -c SCRIPT).
    const script = execFileSync("python3", ["-c", 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["runcmd"][0][2])', cloudConfig], { encoding: "utf8" });
    await writeFile(join(w.root, "..", "runcmd.sh"), script);
    const result = await bootstrapIn(w, join(w.root, "..", "runcmd.sh"));
    assert.equal(result.code, 0, result.stderr);
    const upper = join(w.root, "upper");
    assert.equal(await readlink(join(upper, "opt", "bosun")), `/opt/bosun-releases/${artifact.sha256}`);
    assert.match(await readFile(join(upper, "etc", "bosun", "coordinator.env"), "utf8"), /^BOSUN_KEY_ID=coordinator$/m);
    assert.match(await readFile(join(upper, "etc", "bosun", "keys", "coordinator.pem"), "utf8"), /not a real key/);
    const calls = await readFile(join(w.fake, "calls.log"), "utf8");
    assert.ok(calls.includes("aws s3 cp --only-show-errors --region us-east-1 s3://example-bosun-prod/dist/bosun.tgz.sha256"), calls);
    assert.ok(calls.includes("systemctl enable bosun-coordinator.service"), calls);
    assert.ok(!calls.includes("systemctl enable bosun-agent.service"), calls);
  });

  it("refuses a bundle that does not match its SHA-256, unpacking nothing", { skip }, async () => {
    const w = await world("tampered", { roles: "web", tamper: true });
    const result = await bootstrapIn(w);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /dist\/bosun\.tgz does not match its SHA-256 in dist\/bosun\.tgz\.sha256/);
    assert.equal(existsSync(join(w.root, "upper", "opt", "bosun")), false);
    assert.equal(existsSync(join(w.root, "upper", "opt", "bosun-releases")), false);
  });

  it("pins the Node.js the bundle is built and tested on", async () => {
    const locked = JSON.parse(await readFile(join(root, "package-lock.json"), "utf8")) as { packages: Record<string, { version: string }> };
    const pinned = /BOSUN_NODE_VERSION="\$\{BOSUN_NODE_VERSION:-([0-9.]+)\}"/.exec(await readFile(bootstrap, "utf8"))?.[1];
    assert.equal(pinned, locked.packages["node_modules/node"]!.version);
  });
});
