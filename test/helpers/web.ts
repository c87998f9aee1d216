import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { once } from "node:events";
import { mkdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ChildServer } from "./process.ts";
import { fileURLToPath } from "node:url";
import { simpleGit } from "simple-git";
import { freePort } from "../../packages/cli/src/devdb.ts";

/** A real git repository in a temp directory, for releases to come from. */
export class SiteRepo {
  readonly dir: string;
  #n = 0;

  constructor(dir: string) {
    this.dir = dir;
  }

  static async create(dir: string): Promise<SiteRepo> {
    await mkdir(dir, { recursive: true });
    const git = simpleGit(dir);
    await git.init();
    await git.addConfig("user.name", "Bosun Test");
    await git.addConfig("user.email", "test@bosun.invalid");
    await git.raw(["checkout", "-b", "main"]);
    return new SiteRepo(dir);
  }

  /** Commits the given files (path → content; null deletes; `{ link }` a symbolic link) and returns the commit id. */
  async commit(files: Record<string, string | Buffer | null | { link: string }>, message = `change ${++this.#n}`): Promise<string> {
    for (const [path, content] of Object.entries(files)) {
      const full = join(this.dir, path);
      await rm(full, { force: true });
      if (content === null) continue;
      await mkdir(join(full, ".."), { recursive: true });
      if (typeof content === "object" && "link" in content) await symlink(content.link, full);
      else await writeFile(full, content);
    }
    const git = simpleGit(this.dir);
    await git.add(["--all", "."]);
    await git.commit(message);
    return (await git.revparse(["HEAD"])).trim();
  }

  /** A page that says which release it belongs to, padded so a read of it takes a while. */
  static page(label: string, bytes = 64 * 1024): string {
    const head = `<!doctype html><title>${label}</title><p>${label}</p>\n`;
    return head + `<!-- ${label} -->\n`.repeat(Math.ceil((bytes - head.length) / (label.length + 10)));
  }
}

export { freePort };

/** The server-block include deploy/ ships for apps Bosun releases: the tests serve through it as a node would. */
const appConf = fileURLToPath(new URL("../../deploy/nginx/bosun-app.conf", import.meta.url));

/** nginx from Debian serving `<root>/current` on a free port, in the foreground, until stop(). */
export class Nginx extends ChildServer {
  readonly port: number;

  private constructor(port: number, child: ChildProcess) {
    // SIGQUIT: nginx's graceful stop.
    super(child, "SIGQUIT");
    this.port = port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(dir: string, docroot: string): Promise<Nginx> {
    await mkdir(join(dir, "tmp"), { recursive: true });
    const port = await freePort();
    const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `${t}_temp_path ${join(dir, "tmp", t)};`).join("\n  ");
    await writeFile(
      join(dir, "nginx.conf"),
      `${process.getuid?.() === 0 ? "user root;" : ""}
worker_processes 2;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 1024; }
http {
  access_log off;
  ${temp}
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port};
    root ${docroot};
    include ${appConf};
  }
}
`,
    );
    const child = spawn("nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", "daemon off;"], { stdio: "ignore" });
    const nginx = new Nginx(port, child);
    // Wait until it answers (any status): an observable outcome, bounded.
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}; see ${join(dir, "error.log")}`);
      try {
        await fetch(nginx.url, { signal: AbortSignal.timeout(500) });
        return nginx;
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    await nginx.stop();
    throw new Error("nginx did not start answering");
  }
}

/**
 * Requests a page continuously from `workers` loops until stopped, and counts failures and
 * bodies that are not exactly one of the known releases' pages.
 */
export function loadGenerator(url: string, known: () => ReadonlySet<string>, workers = 8) {
  let running = true;
  const stats = { requests: 0, failed: 0, mixed: 0, errors: [] as string[] };
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      try {
        const response = await fetch(url);
        const body = await response.text();
        stats.requests += 1;
        if (response.status !== 200) {
          stats.failed += 1;
          if (stats.errors.length < 5) stats.errors.push(`status ${response.status}`);
        } else if (!known().has(body)) stats.mixed += 1;
      } catch (error) {
        stats.requests += 1;
        stats.failed += 1;
        if (stats.errors.length < 5) stats.errors.push((error as Error).message);
      }
    }
  });
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(loops);
      return stats;
    },
  };
}

/** An HTTP server of a test's own on a free 127.0.0.1 port, answering with `handle`. */
export abstract class LocalServer {
  readonly #server: Server;
  port = 0;

  constructor() {
    this.#server = createServer((request, response) => this.handle(request, response));
  }

  protected abstract handle(request: IncomingMessage, response: ServerResponse): void;

  async start(): Promise<this> {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    this.port = (this.#server.address() as { port: number }).port;
    return this;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/** A web node's site: a real HTTP server that names itself, with a check path (/health) and a slow page (/slow?ms=N). */
export class Backend extends LocalServer {
  inFlight = 0;
  served = 0;
  readonly name: string;

  constructor(name: string) {
    super();
    this.name = name;
  }

  protected handle(request: IncomingMessage, response: ServerResponse): void {
    const url = new URL(request.url ?? "/", "http://x");
    if (url.pathname === "/health") return void response.end("ok");
    this.inFlight += 1;
    const finish = () => {
      this.inFlight -= 1;
      this.served += 1;
      response.end(this.name);
    };
    if (url.pathname === "/slow") setTimeout(finish, Number(url.searchParams.get("ms") ?? 2000));
    else finish();
  }
}
