import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSiteServer } from "../src/devsite.ts";

describe("the dev fleet's site server", () => {
  it("serves the release behind `current`, links inside it, and nothing a link reaches outside", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bosun-devsite-"));
    const release = join(dir, "releases", "a");
    await mkdir(release, { recursive: true });
    await writeFile(join(release, "index.html"), "home\n");
    await writeFile(join(dir, "secret.key"), "PRIVATE\n");
    await symlink("index.html", join(release, "alias.html"));
    await symlink(join(dir, "secret.key"), join(release, "leak.txt"));
    await symlink("../../secret.key", join(release, "climb.txt"));
    await symlink(join("releases", "a"), join(dir, "current"));
    const site = await startSiteServer(join(dir, "current"), 0);
    try {
      const get = async (path: string) => {
        const response = await fetch(`${site.url}${path}`);
        return `${response.status} ${(await response.text()).trim().split("\n")[0]}`;
      };
      assert.equal(await get("/"), "200 home");
      assert.equal(await get("/alias.html"), "200 home");
      assert.match(await get("/leak.txt"), /^404 /);
      assert.match(await get("/climb.txt"), /^404 /);
      assert.match(await get("/../secret.key"), /^404 /);
    } finally {
      await site.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
