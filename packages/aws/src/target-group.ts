import type { ElasticLoadBalancingV2Client, TargetDescription } from "@aws-sdk/client-elastic-load-balancing-v2";
import { recorded } from "./clients.ts";
import { abortableDelay } from "./consumer.ts";
import { inNetworks, type Address, type Logger, type TargetGroupSettings } from "@bosun/core";

/** One registered target as ELBv2 reports it (DescribeTargetHealth). */
export interface TargetStatus {
  /** The instance id (the node's id) or the IP address, by the group's target type. */
  id: string;
  port: number;
  /** initial, healthy, unhealthy, unused, draining, unavailable, unhealthy.draining. */
  state: string;
  reason?: string;
  description?: string;
}

/** What a follower knows of a web node: from its node-up, node-down, or the fleet record. */
export interface WebNodeFact {
  node: string;
  roles: readonly string[];
  up: boolean;
  address?: Address | undefined;
}

export type FollowOutcome =
  | { node: string; action: "registered" | "deregistered" | "unchanged"; target?: TargetDescription }
  | { node: string; action: "refused"; reason: string };

export interface TargetDrain {
  node: string;
  /** True when ELBv2 finished draining (the target is no longer registered) before the timeout. */
  drained: boolean;
  waitedMs: number;
  /** The group's deregistration delay: how long ELBv2 lets the target's connections finish. */
  delaySeconds: number;
}

/** A lazily made client: the ELBv2 SDK is large, and only target-group work needs it. */
export type Elbv2Provider = () => Promise<ElasticLoadBalancingV2Client>;

/** An ELBv2 client configured by the SDK's own means (AWS_REGION, AWS_ENDPOINT_URL, the credential chain), made on first use. */
export function elbv2Provider(): Elbv2Provider & { loaded?: Promise<ElasticLoadBalancingV2Client> } {
  const get: Elbv2Provider & { loaded?: Promise<ElasticLoadBalancingV2Client> } = () =>
    (get.loaded ??= import("@aws-sdk/client-elastic-load-balancing-v2").then((sdk) => recorded("elasticloadbalancing", new sdk.ElasticLoadBalancingV2Client({}))));
  return get;
}

/**
 * An AWS target group kept equal to the fleet's web nodes that are up: a node-up registers the
 * node (by instance id or address, at its advertised port), a node-down deregisters it (ELBv2
 * then drains it for the group's deregistration delay), a drain deregisters and waits for that.
 * Every change is made against the group's current targets, so a duplicate node-up registers
 * nothing and a node-down for a target already gone is no error. Calls run one at a time.
 */
export class TargetGroup {
  readonly #elbv2: Elbv2Provider;
  readonly #log: Logger;
  readonly #settings: TargetGroupSettings;
  /** Each web node's target as last registered: a node-down carries no address, an ip group needs it. */
  readonly #targets = new Map<string, TargetDescription>();
  #work: Promise<unknown> = Promise.resolve();

  constructor(deps: { elbv2: Elbv2Provider; logger: Logger }, options: { settings: TargetGroupSettings }) {
    this.#elbv2 = deps.elbv2;
    this.#log = deps.logger.child({ targetGroup: options.settings.arn });
    this.#settings = options.settings;
  }

  get arn(): string {
    return this.#settings.arn;
  }

  /** The target a web node is, or why it may not be one. */
  targetOf(fact: WebNodeFact): { target: TargetDescription } | { refused: string } {
    if (!fact.roles.includes("web")) return { refused: `its roles (${fact.roles.join(", ")}) do not include web` };
    const address = fact.address;
    if (!address) return { refused: "it reports no address (set web.advertise on the node)" };
    if (!inNetworks(address.host, this.#settings.networks)) return { refused: `its address ${address.host} is outside the allowed networks ${this.#settings.networks.join(", ")}` };
    return { target: { Id: this.#settings.targetType === "instance" ? fact.node : address.host, Port: address.port } };
  }

  /** Brings one web node's registration in line with a fact about it. */
  follow(fact: WebNodeFact): Promise<FollowOutcome> {
    return this.#serial(async () => {
      const wanted = this.targetOf(fact);
      if ("refused" in wanted) {
        if (fact.up) this.#log.warn({ node: fact.node, reason: wanted.refused }, "web node refused as a target");
        // A node that was registered and now may not be (its address moved out) still leaves the group.
        const known = this.#targets.get(fact.node);
        if (!known || fact.up) return { node: fact.node, action: "refused", reason: wanted.refused };
        return this.#deregister(fact.node, known);
      }
      const target = wanted.target;
      const registered = await this.#registered(target);
      if (fact.up) {
        this.#targets.set(fact.node, target);
        if (registered) return { node: fact.node, action: "unchanged", target };
        await (await this.#elbv2()).send(new (await sdk()).RegisterTargetsCommand({ TargetGroupArn: this.arn, Targets: [target] }));
        this.#log.info({ node: fact.node, target }, "registered a web node in the target group");
        return { node: fact.node, action: "registered", target };
      }
      if (!registered) {
        this.#targets.delete(fact.node);
        return { node: fact.node, action: "unchanged", target };
      }
      return this.#deregister(fact.node, target);
    });
  }

  /**
   * Brings the whole group in line with what is known of every web node, with one read of its
   * targets: up nodes missing from it are registered, nodes known to be down that are still in
   * it are deregistered. Targets nobody knows of are left alone (another team's, or registered by hand).
   */
  reconcile(facts: readonly WebNodeFact[]): Promise<{ registered: string[]; deregistered: string[]; refused: { node: string; reason: string }[] }> {
    return this.#serial(async () => {
      const present = (await this.targets()).filter((t) => !gone.has(t.state));
      const has = (target: TargetDescription) => present.some((t) => t.id === target.Id && t.port === target.Port);
      const register: [string, TargetDescription][] = [];
      const deregister: [string, TargetDescription][] = [];
      const refused: { node: string; reason: string }[] = [];
      for (const fact of facts) {
        const wanted = this.targetOf(fact);
        if ("refused" in wanted) {
          if (fact.up && fact.roles.includes("web")) refused.push({ node: fact.node, reason: wanted.refused });
          continue;
        }
        if (fact.up) this.#targets.set(fact.node, wanted.target);
        if (fact.up && !has(wanted.target)) register.push([fact.node, wanted.target]);
        if (!fact.up && has(wanted.target)) deregister.push([fact.node, wanted.target]);
      }
      const client = await this.#elbv2();
      if (register.length) await client.send(new (await sdk()).RegisterTargetsCommand({ TargetGroupArn: this.arn, Targets: register.map(([, t]) => t) }));
      if (deregister.length) await client.send(new (await sdk()).DeregisterTargetsCommand({ TargetGroupArn: this.arn, Targets: deregister.map(([, t]) => t) }));
      for (const [node] of deregister) this.#targets.delete(node);
      const result = { registered: register.map(([n]) => n), deregistered: deregister.map(([n]) => n), refused };
      if (register.length || deregister.length) this.#log.info(result, "reconciled the target group with the fleet");
      return result;
    });
  }

  /** Deregisters a web node and waits until ELBv2 has drained it, or `timeoutMs` (the deregistration delay and half a minute) passed. */
  async drain(fact: WebNodeFact, options: { timeoutMs?: number; signal?: AbortSignal }): Promise<TargetDrain> {
    const delaySeconds = await this.deregistrationDelaySeconds();
    const timeoutMs = options.timeoutMs ?? (delaySeconds + 30) * 1000;
    const began = Date.now();
    const outcome = await this.follow({ ...fact, up: false });
    if (outcome.action === "refused") throw new Error(`node ${fact.node} cannot be a target of ${this.arn}: ${outcome.reason}`);
    const target = outcome.target!;
    for (;;) {
      const state = (await this.targets([target]))[0]?.state ?? "unused";
      const drained = state !== "draining" && state !== "unhealthy.draining";
      if (drained || Date.now() - began >= timeoutMs || options.signal?.aborted) {
        const result = { node: fact.node, drained, waitedMs: Date.now() - began, delaySeconds };
        this.#log.info(result, drained ? "drained a web node from the target group" : "drain timeout passed while ELBv2 was still draining the target");
        return result;
      }
      await abortableDelay(1000, options.signal).catch(() => undefined);
    }
  }

  /** The group's targets (or the named ones) with their state and health. */
  async targets(only?: TargetDescription[]): Promise<TargetStatus[]> {
    const out = await (await this.#elbv2()).send(new (await sdk()).DescribeTargetHealthCommand({ TargetGroupArn: this.arn, ...(only ? { Targets: only } : {}) }));
    return (out.TargetHealthDescriptions ?? []).map((d) => ({
      id: d.Target?.Id ?? "",
      port: d.Target?.Port ?? 0,
      state: d.TargetHealth?.State ?? "unknown",
      ...(d.TargetHealth?.Reason ? { reason: d.TargetHealth.Reason } : {}),
      ...(d.TargetHealth?.Description ? { description: d.TargetHealth.Description } : {}),
    }));
  }

  /** How long ELBv2 drains a deregistered target (the group's `deregistration_delay.timeout_seconds`, 300 by default). */
  async deregistrationDelaySeconds(): Promise<number> {
    const out = await (await this.#elbv2()).send(new (await sdk()).DescribeTargetGroupAttributesCommand({ TargetGroupArn: this.arn }));
    const value = out.Attributes?.find((a) => a.Key === "deregistration_delay.timeout_seconds")?.Value;
    return value === undefined ? 300 : Number(value);
  }

  async #deregister(node: string, target: TargetDescription): Promise<FollowOutcome> {
    await (await this.#elbv2()).send(new (await sdk()).DeregisterTargetsCommand({ TargetGroupArn: this.arn, Targets: [target] }));
    this.#targets.delete(node);
    this.#log.info({ node, target }, "deregistered a web node from the target group (ELBv2 drains it for the deregistration delay)");
    return { node, action: "deregistered", target };
  }

  /** Whether the target is registered now (draining or unused targets are not). */
  async #registered(target: TargetDescription): Promise<boolean> {
    const found = (await this.targets()).find((t) => t.id === target.Id && t.port === target.Port);
    return found !== undefined && !gone.has(found.state);
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#work.catch(() => undefined).then(work);
    this.#work = next;
    return next;
  }
}

/** Target states of a target that is leaving or has left the group. */
const gone = new Set(["draining", "unused", "unhealthy.draining"]);

const sdk = () => import("@aws-sdk/client-elastic-load-balancing-v2");
