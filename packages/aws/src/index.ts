export * from "./clients.ts";
export * from "./names.ts";
export * from "./topology.ts";
export * from "./bus.ts";
export * from "./consumer.ts";
export * from "./state.ts";
export * from "./watch.ts";
export * from "./identity.ts";
