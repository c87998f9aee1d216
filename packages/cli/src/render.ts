/** Plain-text rendering for people; `--json` callers get the data itself. */
export function table(rows: readonly Record<string, unknown>[], columns: readonly string[]): string {
  const cells = rows.map((row) => columns.map((c) => format(row[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: readonly string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join("\n");
}

function format(value: unknown): string {
  if (value === undefined || value === null) return "-";
  if (Array.isArray(value)) return value.join(",");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

export interface Output {
  json: boolean;
  /** Writes data: as JSON with --json, else through the renderer. */
  print<T>(data: T, render: (data: T) => string): void;
}

export function output(json: boolean, stream: NodeJS.WritableStream = process.stdout): Output {
  return {
    json,
    print(data, render) {
      stream.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${render(data)}\n`);
    },
  };
}
