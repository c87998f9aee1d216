// Preloaded (node --import) into a measured process: at exit it appends its peak RSS in KiB
// to the file BOSUN_BENCH_RSS_FILE names, one line per process.
import { appendFileSync } from "node:fs";

process.on("exit", () => {
  const file = process.env.BOSUN_BENCH_RSS_FILE;
  if (file) appendFileSync(file, `${process.resourceUsage().maxRSS}\n`);
});
