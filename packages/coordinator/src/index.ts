export * from "./coordinator.ts";
export * from "./fleet.ts";
export * from "./lease.ts";
export * from "./procedures/issuer.ts";
export * from "./procedures/follow.ts";
export * from "./procedures/send.ts";
export * from "./procedures/rollout.ts";
export { desiredReleases } from "./procedures/desired.ts";
export { resolveRef } from "./procedures/git.ts";
