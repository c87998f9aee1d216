import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { BosunError } from "@bosun/core";

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
  const { startFauxqs } = await loadFauxqs();
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

/**
 * fauxqs is imported when an emulator starts, not with this module: the bundle that nodes run
 * (build/bundle.ts) leaves it out, and every command but `bosun dev` works without it.
 */
export async function loadFauxqs(): Promise<typeof import("fauxqs")> {
  try {
    return await import("fauxqs");
  } catch (error) {
    if ((error as { code?: string }).code !== "ERR_MODULE_NOT_FOUND") throw error;
    throw new BosunError(
      "BOSUN_NO_EMULATOR",
      "the local SQS/SNS/S3 emulator (the fauxqs package) is not installed: this is the self-contained bundle, which leaves it out; run `bosun dev` from a source checkout after `npm install`",
      { cause: error },
    );
  }
}
