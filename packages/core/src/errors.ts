/** The few named errors Bosun throws. Each has a stable `code` for scripts and tests. */
export class BosunError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A setting is missing or has a bad value; the message names the setting and the value received. */
export class ConfigError extends BosunError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("BOSUN_CONFIG", message, options);
  }
}

/** The trust file or a key file cannot be read or is malformed. */
export class KeyError extends BosunError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("BOSUN_KEY", message, options);
  }
}

/** A call to SQS, SNS, S3 or EC2 failed in a way the caller cannot fix by retrying at once. */
export class AwsError extends BosunError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("BOSUN_AWS", message, options);
  }
}

/** A command's issuer gave up waiting, or target nodes failed. */
export class CommandFailedError extends BosunError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("BOSUN_COMMAND_FAILED", message, options);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The first line of an error's message: git and other tools put the reason there and detail below. */
export function errorSummary(err: unknown): string {
  return errorMessage(err).trim().split("\n")[0] ?? "";
}
