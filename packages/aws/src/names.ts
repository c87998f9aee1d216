/** Names of the AWS resources of one Bosun cluster. */
export const names = {
  topic: (cluster: string) => `bosun-${cluster}-bus`,
  nodeQueue: (cluster: string, nodeId: string) => `bosun-${cluster}-node-${nodeId}`,
  coordinatorQueue: (cluster: string) => `bosun-${cluster}-coordinator`,
  /** A balancer node's queue of web nodes' node-up and node-down events. */
  balancerQueue: (cluster: string, nodeId: string) => `bosun-${cluster}-lb-${nodeId}`,
  watchQueue: (cluster: string, suffix: string) => `bosun-${cluster}-watch-${suffix}`,
  deadLetter: (queue: string) => `${queue}-dlq`,
};

/** Keys of the small state records Bosun keeps in S3. */
export const stateKeys = {
  /** The fleet as the coordinator knows it: one snapshot, written at most every few seconds. */
  fleet: "state/fleet.json",
  /** The release every web node of an app should serve (a signed record). */
  release: (app: string) => `state/releases/${app}.json`,
  /** What a node answered to a command: its signed result event, written once. */
  result: (commandId: string, nodeId: string) => `state/results/${commandId.toLowerCase()}/${nodeId}.json`,
  results: (commandId: string) => `state/results/${commandId.toLowerCase()}/`,
  /** Who runs the coordinator's schedules now. */
  lease: (name: string) => `state/leases/${name}.json`,
  /** A balancer's word that it has drained and removed a web node that left on purpose (the node waits for it before it stops). */
  drain: (nodeId: string, balancerId: string) => `state/drains/${nodeId}/${balancerId}.json`,
  drains: (nodeId: string) => `state/drains/${nodeId}/`,
  /** When a coordinator schedule (backup, drill) last ran, what it sent, and how that ended. */
  schedule: (name: string) => `state/schedules/${name}.json`,
};
