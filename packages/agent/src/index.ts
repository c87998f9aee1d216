export * from "./agent.ts";
export * from "./ledger.ts";
export * from "./commands/index.ts";
