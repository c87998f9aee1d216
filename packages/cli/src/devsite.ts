import { createReadStream } from "node:fs";
import { mkdir, realpath, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { once } from "node:events";
import { extname, join, normalize, sep } from "node:path";
import { simpleGit } from "simple-git";

const types: Record<string, string> = { ".html": "text/html; charset=utf-8", ".css": "text/css", ".js": "text/javascript", ".json": "application/json", ".txt": "text/plain; charset=utf-8" };

/**
 * A small static server for a dev web node's `current` release, standing in for nginx on a
 * developer's machine. Each request resolves the symlink afresh, as nginx does.
 */
export async function startSiteServer(docroot: string, port: number): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(async (req, res) => {
    try {
      const root = await realpath(docroot);
      const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
      let file = await realpath(join(root, path));
      if ((await stat(file)).isDirectory()) file = await realpath(join(file, "index.html"));
      // Links are resolved first and the result must still be inside the release: a release never
      // serves what lies outside it (deploy/nginx goes further and follows no link below the root).
      if (!file.startsWith(root + sep)) throw new Error("outside the document root");
      res.setHeader("content-type", types[extname(file)] ?? "application/octet-stream");
      createReadStream(file).on("error", () => res.destroy()).pipe(res);
    } catch {
      res.statusCode = 404;
      res.end("Not found (has a release been made? bosun release --app demo --ref HEAD --wait)\n");
    }
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  const address = server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** The demo site's repository: created with one commit the first time, then the developer's to change. */
export async function ensureDemoRepo(dir: string): Promise<void> {
  if (await stat(join(dir, ".git")).then(() => true, () => false)) return;
  await mkdir(dir, { recursive: true });
  const git = simpleGit(dir);
  await git.init();
  await git.addConfig("user.name", "Bosun dev");
  await git.addConfig("user.email", "dev@bosun.invalid");
  await writeFile(
    join(dir, "index.html"),
    `<!doctype html>\n<title>Bosun demo</title>\n<h1>Bosun demo site</h1>\n<p>Edit this file, commit, and run: bosun release --app demo --ref HEAD --wait</p>\n`,
  );
  await git.add(["index.html"]);
  await git.commit("Demo site");
}
