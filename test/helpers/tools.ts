import { it } from "node:test";
import assert from "node:assert/strict";
import { whereIs } from "@bosun/core";

/** Whether a command is on the PATH (or in /usr/sbin and /sbin, where Debian puts daemons). */
export function onPath(command: string): boolean {
  return whereIs(command) !== undefined;
}

/**
 * The Debian packages a test file drives for real. When one is missing, the file has a single
 * failing test that says what to install, and its other tests are skipped (pass `skip` to them),
 * rather than a cascade of failures that hides the cause.
 */
export function needs(tools: Record<string, string>): { skip: string | false } {
  const missing = Object.entries(tools).filter(([command]) => !onPath(command));
  if (missing.length === 0) return { skip: false };
  const install = `apt-get install ${missing.map(([, pkg]) => pkg).join(" ")}`;
  it(`needs ${missing.map(([command]) => command).join(", ")}`, () => assert.fail(`${missing.map(([c]) => c).join(", ")} not found: install with \`${install}\` (.ci/run does)`));
  return { skip: `needs ${install}` };
}
