const levels: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };
const quiet = new Set(["level", "time", "pid", "hostname", "name", "msg", "node"]);

/** One child's pino line as a short line for a person watching `bosun dev`. */
export function formatChildLine(name: string, line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `${name.padEnd(11)} ${line}`;
  }
  const time = typeof record["time"] === "string" ? record["time"].slice(11, 19) : "";
  const level = levels[Number(record["level"])] ?? "info";
  const extra = Object.entries(record)
    .filter(([k]) => !quiet.has(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
    .join(" ");
  return `${time} ${name.padEnd(11)} ${level.padEnd(5)} ${String(record["msg"] ?? "")}${extra ? `  ${extra}` : ""}`;
}
