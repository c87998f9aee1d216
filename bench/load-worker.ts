import { readFile } from "node:fs/promises";
import { Agent, get } from "node:http";

/**
 * HTTP load for the release benchmark, in a process of its own so that the swaps the benchmark
 * process makes do not slow it, and faster than the test suite's fetch() loop (about 1.8x here):
 * node:http keep-alive connections request one URL back to back, and each body is compared
 * with the known release pages.
 *
 *   node bench/load-worker.ts URL CONNECTIONS MAX_SECONDS PAGE_FILE...
 *
 * Prints `ready` after the first response that is one of the pages, then runs until its stdin
 * ends (or MAX_SECONDS, or a cap of requests), and prints one JSON line of LoadStats.
 */
export interface LoadStats {
  requests: number;
  /** Not a 200, or no complete response. */
  failed: number;
  /** A 200 whose body is none of the known pages: a mix of releases, or a partial read. */
  mixed: number;
  seconds: number;
  /** The first few failures, as they were. */
  errors: string[];
}

const maxRequests = 50_000_000;
const requestTimeoutMs = 5_000;

type Outcome = { ok: true; body: Buffer } | { ok: false; error: string };

function request(url: string, agent: Agent): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = get(url, { agent, timeout: requestTimeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", (error) => resolve({ ok: false, error: error.message }));
      res.on("end", () => resolve(res.statusCode === 200 ? { ok: true, body: Buffer.concat(chunks) } : { ok: false, error: `status ${res.statusCode}` }));
    });
    req.on("timeout", () => req.destroy(new Error(`no response in ${requestTimeoutMs} ms`)));
    req.on("error", (error) => resolve({ ok: false, error: error.message }));
  });
}

async function main(argv: readonly string[]): Promise<number> {
  const [url, connectionsText, maxSecondsText, ...pageFiles] = argv;
  const connections = Number(connectionsText);
  const maxSeconds = Number(maxSecondsText);
  if (!url || !(connections >= 1 && connections <= 256) || !(maxSeconds > 0 && maxSeconds <= 3600) || pageFiles.length === 0) {
    process.stderr.write("usage: load-worker.ts URL CONNECTIONS(1-256) MAX_SECONDS(1-3600) PAGE_FILE...\n");
    return 2;
  }
  const pages = await Promise.all(pageFiles.map((file) => readFile(file)));
  const known = (body: Buffer) => pages.some((page) => page.equals(body));
  const agent = new Agent({ keepAlive: true, maxSockets: connections });

  // Ready once the site answers with one of the pages, within 10 s.
  const readyBy = performance.now() + 10_000;
  for (;;) {
    const outcome = await request(url, agent);
    if (outcome.ok && known(outcome.body)) break;
    if (performance.now() > readyBy) {
      process.stderr.write(`load-worker: ${url} did not serve a known page within 10 s (${outcome.ok ? "unknown body" : outcome.error})\n`);
      agent.destroy();
      return 1;
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  let running = true;
  const stop = () => (running = false);
  const deadline = setTimeout(stop, maxSeconds * 1000);
  process.stdin.on("end", stop).resume();
  process.once("SIGTERM", stop);

  const stats: LoadStats = { requests: 0, failed: 0, mixed: 0, seconds: 0, errors: [] };
  process.stdout.write("ready\n");
  const started = performance.now();
  const loops = Array.from({ length: connections }, async () => {
    while (running && stats.requests < maxRequests) {
      const outcome = await request(url, agent);
      stats.requests += 1;
      if (!outcome.ok) {
        stats.failed += 1;
        if (stats.errors.length < 5) stats.errors.push(outcome.error);
      } else if (!known(outcome.body)) stats.mixed += 1;
    }
  });
  await Promise.all(loops);
  stats.seconds = (performance.now() - started) / 1000;
  clearTimeout(deadline);
  agent.destroy();
  process.stdin.pause();
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
