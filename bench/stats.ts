/** Summary statistics and plain-text tables for the benchmarks. */

export interface Summary {
  count: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/**
 * Nearest-rank percentile of sorted samples. With fewer than 100 samples p99 is the
 * largest sample, which is the honest reading of so few.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error("percentile of no samples");
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    count: sorted.length,
    min: round(sorted[0] ?? Number.NaN),
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1] ?? Number.NaN),
    mean: round(sorted.reduce((sum, v) => sum + v, 0) / sorted.length),
  };
}

export function median(samples: readonly number[]): number {
  return round(percentile([...samples].sort((a, b) => a - b), 50));
}

/** One decimal place: the timers and the emulator are not finer than that. */
export function round(value: number, places = 1): number {
  const f = 10 ** places;
  return Math.round(value * f) / f;
}

export function formatMs(value: number): string {
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}

export function formatRatio(value: number): string {
  return `${value.toFixed(2)}x`;
}

/** Columns padded to their widest cell, numbers and units right-aligned, with a rule under the header. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => /^[\d.]+( ?(ms|s|x|%|MB))?$/.test(r[i] ?? "")));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("-+-"), ...rows.map(line)].join("\n");
}

/** A table column: its header, and how one row's cell in it is written. */
export type Column<R> = readonly [header: string, cell: (row: R) => string];

/** A table of one row per item, its columns given once as header and cell together. */
export function renderColumns<R>(columns: readonly Column<R>[], items: readonly R[]): string {
  return renderTable(
    columns.map(([header]) => header),
    items.map((item) => columns.map(([, cell]) => cell(item))),
  );
}

/** Columns `NAME p50`, `NAME p99`, … of a summary each row carries, in milliseconds. */
export function summaryColumns<R>(name: string, summary: (row: R) => Summary, keys: readonly (keyof Summary)[]): Column<R>[] {
  return keys.map((key) => [`${name} ${key}`, (row) => formatMs(summary(row)[key])]);
}
