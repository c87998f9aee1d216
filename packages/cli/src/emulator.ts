import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { startFauxqs } from "fauxqs";

export interface Emulator {
  /** http://127.0.0.1:PORT, for AWS_ENDPOINT_URL. */
  endpoint: string;
  stop(): Promise<void>;
}

/**
 * The local SQS/SNS/S3 endpoint (fauxqs, in this process), with its state on disk under
 * `dir` so queues, messages and objects survive a restart of `bosun dev`.
 */
export async function startEmulator(options: { dir: string; port: number }): Promise<Emulator> {
  await mkdir(join(options.dir, "s3"), { recursive: true });
  const server = await startFauxqs({
    port: options.port,
    host: "localhost",
    logger: false,
    dataDir: options.dir,
    s3StorageDir: join(options.dir, "s3"),
  });
  return { endpoint: `http://127.0.0.1:${server.port}`, stop: () => server.stop() };
}
