import type { AwsClients, EventVerifier } from "@bosun/aws";
import type { Settings, Signer, TrustStore } from "@bosun/core";

/**
 * Whoever issues commands and follows them: the CLI, the coordinator, a dashboard. The
 * procedures here take one and return data; rendering is the caller's.
 */
export interface Issuer {
  settings: Settings;
  clients: AwsClients;
  trust(): TrustStore;
  signer(): Signer;
  topicArn(): Promise<string>;
  /** Checks events, including that each names its true sender (nodes' registered keys). */
  verifier(): Promise<EventVerifier>;
}
