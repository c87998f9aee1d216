import { pino, type Logger, type LevelWithSilent } from "pino";

export type { Logger };

/**
 * One JSON line per event on stdout (or the given stream): object first, message second.
 * Tests and `bosun dev` read these lines.
 */
export function createLogger(options: { level: LevelWithSilent; name: string; base?: Record<string, unknown> }, stream?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level: options.level,
      name: options.name,
      base: { pid: process.pid, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Never log signatures or key material, even if someone passes an envelope or key by mistake.
      redact: { paths: ["sig", "*.sig", "privateKey", "*.privateKey", "envelope.sig"], censor: "[redacted]" },
    },
    // Synchronous: when whoever reads our stdout has gone (a killed `bosun dev`), the write fails with
    // EPIPE, which pino turns into silence; an asynchronous destination would instead retry its
    // flush at exit forever (sonic-boom's flushSync loops on EPIPE) and the process would never end.
    stream ?? pino.destination({ fd: 1, sync: true }),
  );
}
