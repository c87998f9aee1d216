export * from "./agent.ts";
export * from "./ledger.ts";
export * from "./pipeline.ts";
export * from "./commands/index.ts";
export * from "./web/release-root.ts";
export { lookUpUser } from "./web/build.ts";
export { resolveRef, commitPattern } from "./web/git.ts";
export * from "./web/sync.ts";
