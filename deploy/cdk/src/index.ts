export * from "./cluster.ts";
export * from "./stack.ts";
export * from "./app.ts";
