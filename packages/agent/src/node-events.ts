import { PreconditionFailed, stateKeys, type Bus, type StateStore } from "@bosun/aws";
import { createMessage, type Clock, type EventPayload, type EventType, type Logger, type NodeRef } from "@bosun/core";
import type { NodeKeyring } from "./node-key.ts";
import type { EventSink } from "./pipeline.ts";

/**
 * Publishes this node's events, signed with the node's own key. A command's result (done,
 * failed, refused) is also written to S3, once, where its issuer finds it even if the event
 * never reached it: on AWS a waiting CLI's new subscription may miss the first deliveries.
 */
export class NodeEventPublisher implements EventSink {
  readonly #bus: Bus;
  readonly #store: StateStore;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #node: NodeRef;
  readonly #keyring: NodeKeyring;
  readonly #ttlSeconds: number;

  constructor(deps: { bus: Bus; store: StateStore; clock: Clock; logger: Logger }, options: { node: NodeRef; keyring: NodeKeyring; ttlSeconds: number }) {
    this.#bus = deps.bus;
    this.#store = deps.store;
    this.#clock = deps.clock;
    this.#log = deps.logger;
    this.#node = options.node;
    this.#keyring = options.keyring;
    this.#ttlSeconds = options.ttlSeconds;
  }

  async emit<T extends EventType>(type: T, correlationId: string, payload: EventPayload<T>, options: { result?: boolean } = {}): Promise<void> {
    const envelope = createMessage(this.#keyring.signer(this.#node.id), { kind: "event", type, payload, correlationId, ttlSeconds: this.#ttlSeconds, now: this.#clock.now() });
    const published = this.#bus.publish(envelope);
    const recorded = options.result
      ? this.#store.put(stateKeys.result(correlationId, this.#node.id), envelope, { ifNoneMatch: "*" }).catch((error: unknown) => {
          // Written before (a redelivery reports its result again): the first one stands.
          if (error instanceof PreconditionFailed) return;
          this.#log.warn({ err: error, commandId: correlationId }, "could not record the command's result in S3");
          throw error;
        })
      : undefined;
    await Promise.all([published, recorded]);
  }
}
