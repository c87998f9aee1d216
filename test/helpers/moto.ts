import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "./web.ts";
import { onPath } from "./tools.ts";
import { ChildServer } from "./process.ts";

/** Why moto cannot run here, or undefined when it can. */
export function motoMissing(): string | undefined {
  return onPath("moto_server") ? undefined : "moto_server not found: install Python's moto with its server (pip install 'moto[server]')";
}

/**
 * Python's moto as a server on a free 127.0.0.1 port, for what the SQS/SNS/S3 emulator does not
 * do as AWS does: S3 conditional writes (If-Match, If-None-Match), EC2, Route 53, ELBv2, IAM.
 */
export class Moto extends ChildServer {
  readonly endpoint: string;

  private constructor(endpoint: string, child: ChildProcess) {
    super(child);
    this.endpoint = endpoint;
  }

  static async start(env: Record<string, string> = {}): Promise<Moto> {
    const missing = motoMissing();
    if (missing) throw new Error(missing);
    const port = await freePort();
    const child = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port)], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, MOTO_EC2_LOAD_DEFAULT_AMIS: "false", ...env },
    });
    const stderr: string[] = [];
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
    const moto = new Moto(`http://127.0.0.1:${port}`, child);
    // Ready when its own API answers; it can take seconds on a loaded machine.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`moto_server exited with ${child.exitCode}: ${stderr.join("").slice(-500)}`);
      const ready = await fetch(`${moto.endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) return moto;
      await new Promise((r) => setTimeout(r, 100));
    }
    await moto.stop();
    throw new Error(`moto_server did not answer within 60 s: ${stderr.join("").slice(-500)}`);
  }
}
