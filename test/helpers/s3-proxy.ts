import { once } from "node:events";
import { createServer, request, type IncomingMessage, type Server } from "node:http";

export type ProxyAction = "pass" | "fail" | "hold";

export interface SeenRequest {
  method: string;
  url: string;
  action: ProxyAction;
  /** Body bytes passed on to S3 (0 for a failed request, whose body goes nowhere). */
  bytes: number;
}

/**
 * A proxy in front of the S3 endpoint that a test steers request by request: pass it on, fail it
 * as S3 does when it has an internal error (500 InternalError), or hold it until `release()`.
 * Bodies stream through; nothing is buffered but what a held request has sent.
 */
export class S3Proxy {
  readonly endpoint: string;
  readonly seen: SeenRequest[] = [];
  rule: (req: { method: string; url: string }) => ProxyAction = () => "pass";
  readonly #server: Server;
  #held: (() => void)[] = [];
  #waiters: { match: (r: SeenRequest) => boolean; resolve: () => void }[] = [];

  private constructor(server: Server, endpoint: string) {
    this.#server = server;
    this.endpoint = endpoint;
  }

  static async start(target: string): Promise<S3Proxy> {
    const upstream = new URL(target);
    let proxy!: S3Proxy;
    const server = createServer((req, res) => proxy.#handle(req, res, upstream));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    proxy = new S3Proxy(server, `http://127.0.0.1:${(server.address() as { port: number }).port}`);
    return proxy;
  }

  /** Lets every held request through, and passes everything from now on. */
  release(): void {
    this.rule = () => "pass";
    const held = this.#held;
    this.#held = [];
    for (const go of held) go();
  }

  /** Forgets the requests seen so far (waitFor looks at those too). */
  reset(): void {
    this.seen.length = 0;
  }

  /** Resolves once a request matching `match` has arrived (or had arrived). */
  waitFor(match: (r: SeenRequest) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (this.seen.some(match)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} at the S3 proxy`)), timeoutMs);
      this.#waiters.push({
        match,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  async close(): Promise<void> {
    this.release();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #handle(req: IncomingMessage, res: import("node:http").ServerResponse, upstream: URL): void {
    const seen: SeenRequest = { method: req.method ?? "GET", url: req.url ?? "/", action: this.rule({ method: req.method ?? "GET", url: req.url ?? "/" }), bytes: 0 };
    this.seen.push(seen);
    this.#waiters = this.#waiters.filter((w) => (w.match(seen) ? (w.resolve(), false) : true));
    if (seen.action === "fail") {
      req.resume();
      req.on("end", () => {
        res.writeHead(500, { "content-type": "application/xml" });
        res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>');
      });
      return;
    }
    const forward = () => {
      const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (reply) => {
        res.writeHead(reply.statusCode ?? 502, reply.headers);
        reply.pipe(res);
      });
      out.on("error", () => res.destroy());
      req.on("data", (chunk: Buffer) => (seen.bytes += chunk.length));
      req.pipe(out);
    };
    if (seen.action === "hold") {
      req.pause();
      this.#held.push(forward);
    } else forward();
  }
}
