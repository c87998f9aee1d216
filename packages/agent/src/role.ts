import type { AwsClients, NodeKeyDirectory, StateStore } from "@bosun/aws";
import type { Clock, Envelope, Logger, NodeRef, Settings, TrustStore } from "@bosun/core";
import type { CommandDefinition } from "./command.ts";
import type { EventSink } from "./pipeline.ts";

/** What the agent gives each of its roles. */
export interface RoleServices {
  node: NodeRef;
  settings: Settings;
  logger: Logger;
  clock: Clock;
  clients: AwsClients;
  /** The cluster's S3 state records. */
  store: StateStore;
  trust: TrustStore;
  /** Publishes events signed by this node's own key. */
  events: EventSink;
  /** Signs a record with this node's own key (a snapshot's manifest and completion record). */
  signRecord(type: string, payload: unknown): Envelope;
  /** The keys nodes registered, to check records other nodes signed. */
  nodeKeyDirectory(): NodeKeyDirectory;
  /** This node's own signing keys, for the command that rotates them (absent where no agent runs). */
  nodeKeys?: { rotate(): Promise<string>; retire(): Promise<string[]> };
}

/** How a role's boot step went, per item it brought in line (for web: per app). */
export interface BootReport {
  role: string;
  items: { name: string; action: string; detail?: string; durationMs: number }[];
  /** Items that could not be brought in line: the boot step failed for them. */
  failures: string[];
}

/**
 * A role the agent can take on (web, db, balancer): one folder under roles/ that gives the
 * agent its command types, what it does once the agent is subscribed, what it adds to
 * heartbeats, its boot step, and how it stops. The generic agent knows none of them.
 */
export interface Role {
  name: string;
  commands: readonly CommandDefinition<never>[];
  /** Once the agent receives commands: bring the node in line with the fleet's desired state. */
  onSubscribed?(signal: AbortSignal): Promise<void>;
  /** What the role adds, under its name, to node-up and heartbeats. */
  report?(): Promise<unknown>;
  /** The node's boot step, before its own server starts (`bosun agent --sync-once`). */
  boot?(signal: AbortSignal): Promise<BootReport>;
  /**
   * When the node is decommissioned: after the agent announced it is leaving, before the roles
   * close and the agent exits (and so before the node's own servers stop). A web node waits here
   * for the balancers to drain it.
   */
  leave?(signal: AbortSignal): Promise<void>;
  /** Stops the role's own background work; the agent calls it while stopping. */
  close?(): Promise<void>;
}

export type RoleFactory = (services: RoleServices) => Role;
