/** Names of the AWS resources of one Bosun cluster. */
export const names = {
  topic: (cluster: string) => `bosun-${cluster}-bus`,
  nodeQueue: (cluster: string, nodeId: string) => `bosun-${cluster}-node-${nodeId}`,
  coordinatorQueue: (cluster: string) => `bosun-${cluster}-coordinator`,
  watchQueue: (cluster: string, suffix: string) => `bosun-${cluster}-watch-${suffix}`,
  deadLetter: (queue: string) => `${queue}-dlq`,
};

/** Keys of the small state records Bosun keeps in S3. */
export const stateKeys = {
  node: (nodeId: string) => `state/nodes/${nodeId}.json`,
  nodesPrefix: "state/nodes/",
  /** The release every web node of an app should serve. */
  release: (app: string) => `state/releases/${app}.json`,
};
