import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { median, round } from "./stats.ts";

/** Resident memory and CPU time of one process, read from Linux's /proc. */
export interface ProcSample {
  /** performance.now() when read. */
  at: number;
  rssKb: number;
  /** Peak resident memory so far (VmHWM). */
  hwmKb: number;
  /** User plus system CPU time, in clock ticks. */
  cpuTicks: number;
}

/** Clock ticks per second for /proc/<pid>/stat times; 100 on nearly every Linux. */
export function clockTicksPerSecond(): number {
  try {
    const value = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    return Number.isInteger(value) && value > 0 ? value : 100;
  } catch {
    return 100;
  }
}

export async function sampleProcess(pid: number): Promise<ProcSample> {
  const [status, stat] = await Promise.all([readFile(`/proc/${pid}/status`, "utf8"), readFile(`/proc/${pid}/stat`, "utf8")]);
  const kb = (field: string) => {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(match[1]);
  };
  // The command name in field 2 may hold spaces and parentheses; the fields after the last ")" do not.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the whole line, so 11 and 12 counted from field 3.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`could not read CPU times from /proc/${pid}/stat`);
  return { at: performance.now(), rssKb: kb("VmRSS"), hwmKb: kb("VmHWM"), cpuTicks: utime + stime };
}

/** Resident memory across processes: the median and largest now, and the largest peak (VmHWM). */
export interface Memory {
  processes: number;
  medianRssMb: number;
  maxRssMb: number;
  maxPeakRssMb: number;
}

export async function memoryOf(pids: readonly number[]): Promise<Memory> {
  const samples = await Promise.all(pids.map((pid) => sampleProcess(pid)));
  const rss = samples.map((s) => s.rssKb / 1024);
  return {
    processes: samples.length,
    medianRssMb: samples.length ? median(rss) : 0,
    maxRssMb: round(Math.max(0, ...rss)),
    maxPeakRssMb: round(Math.max(0, ...samples.map((s) => s.hwmKb / 1024))),
  };
}
