import { existsSync } from "node:fs";
import { join } from "node:path";

/** Where a program is: on the PATH, or in /usr/sbin or /sbin, where Debian puts daemons. */
export function whereIs(command: string): string | undefined {
  const dirs = [...(process.env["PATH"] ?? "").split(":"), "/usr/sbin", "/sbin"];
  return dirs.filter(Boolean).map((dir) => join(dir, command)).find((path) => existsSync(path));
}
