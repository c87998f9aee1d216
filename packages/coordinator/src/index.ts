export * from "./coordinator.ts";
