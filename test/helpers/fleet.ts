import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import {
  createAwsClients,
  destroyAwsClients,
  Bus,
  ensureSubscribedQueue,
  ensureTopic,
  EventVerifier,
  EventWatcher,
  NodeKeyDirectory,
  StateStore,
  names,
  nodeFilterPolicy,
  type AwsClients,
} from "@bosun/aws";
import { TrustStore, createMessage, loadSigner, type Envelope, type NewMessage, type Signer } from "@bosun/core";
import { spawnBosun, type BosunProcess } from "../../packages/cli/src/children.ts";
import { startEmulator, type Emulator } from "../../packages/cli/src/emulator.ts";
import { keysGenerate } from "../../packages/cli/src/commands/keys.ts";

export type LogRecord = Record<string, unknown> & { msg?: string; level?: number };

/** Waits for the first item matching `match`, looking at what has been seen already, then at what comes. */
class Waitable<T> {
  readonly items: T[] = [];
  #waiters: { match: (item: T) => boolean; resolve: (item: T) => void }[] = [];

  push(item: T): void {
    this.items.push(item);
    this.#waiters = this.#waiters.filter((w) => (w.match(item) ? (w.resolve(item), false) : true));
  }

  wait(match: (item: T) => boolean, timeoutMs: number, what: string): Promise<T> {
    const found = this.items.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}`));
      }, timeoutMs);
      const done = (item: T) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.#waiters.push({ match, resolve: done });
    });
  }
}

export interface TestProcess extends BosunProcess {
  logs: Waitable<LogRecord>;
  waitForLog(match: (r: LogRecord) => boolean, what: string, timeoutMs?: number): Promise<LogRecord>;
}

/**
 * A fleet for one test file: the emulator in this process, keys and a trust file in a temp
 * directory, a unique cluster, and agents started as real `bosun agent` processes.
 */
export class TestFleet {
  readonly dir: string;
  readonly cluster: string;
  readonly emulator: Emulator;
  readonly clients: AwsClients;
  readonly events = new Waitable<Envelope>();
  readonly processes: TestProcess[] = [];
  readonly signers = new Map<string, Signer>();
  readonly trust: TrustStore;
  #bus: Bus | undefined;
  #watcher: EventWatcher | undefined;
  #watching = new AbortController();
  #watchLoop: Promise<void> | undefined;
  readonly configFile: string;
  verifier!: EventVerifier;

  readonly #s3Endpoint: string | undefined;
  #processEndpoint: string | undefined;
  /** The `bosun` its processes run: the sources' main.ts unless a test runs a built bundle. */
  #main: string | undefined;

  private constructor(dir: string, emulator: Emulator, trust: TrustStore, configFile: string, s3Endpoint: string | undefined) {
    this.#s3Endpoint = s3Endpoint;
    this.dir = dir;
    this.cluster = `t${randomBytes(4).toString("hex")}`;
    this.emulator = emulator;
    this.trust = trust;
    this.configFile = configFile;
    this.clients = createAwsClients({ endpoint: emulator.endpoint, region: "us-east-1", ...(s3Endpoint ? { s3Endpoint } : {}) });
  }

  /**
   * `s3Endpoint`: keep state in another S3 (moto, which enforces conditional writes as AWS does).
   * `processEndpoint`: where the fleet's processes reach AWS, when not the emulator itself (a
   * counting proxy in front of it); this process's own clients always use the emulator.
   * `main`: the entry point the fleet's processes run (a bundle's bosun.mjs) instead of main.ts.
   */
  static async start(
    settings: Record<string, unknown> = {},
    options: { s3Endpoint?: string; processEndpoint?: (emulator: string) => Promise<string>; main?: string } = {},
  ): Promise<TestFleet> {
    const dir = await mkdtemp(join(tmpdir(), "bosun-test-"));
    // Deploy roots live below: builds run as their own user, which must reach them (keys stay 0700).
    await chmod(dir, 0o755);
    const emulator = await startEmulator({ dir: join(dir, "emulator"), port: 0 });
    try {
      const fleet = await TestFleet.#setUp(dir, emulator, settings, options.s3Endpoint, options.main);
      if (options.processEndpoint) fleet.#processEndpoint = await options.processEndpoint(emulator.endpoint);
      return fleet;
    } catch (error) {
      await emulator.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  static async #setUp(dir: string, emulator: Emulator, settings: Record<string, unknown>, s3Endpoint: string | undefined, main: string | undefined): Promise<TestFleet> {
    const keys = join(dir, "keys");
    const trustFile = join(keys, "trust.json");
    for (const [id, allow] of [
      ["oncall", ["*"]],
      ["ci", ["release", "activate", "rollback"]],
      ["coordinator", ["*", "event:*"]],
      // Trusted, but only for probes.
      ["prober", ["probe"]],
    ] as const) {
      await keysGenerate({ id, allow: [...allow], dir: keys, trustFile });
    }
    // A key nobody trusts: its public half never reaches the trust file.
    await keysGenerate({ id: "rogue", allow: ["*"], dir: join(dir, "rogue-keys"), trustFile: join(dir, "rogue-keys", "trust.json") });
    const configFile = join(dir, "bosun.json");
    const fleet = new TestFleet(dir, emulator, TrustStore.load(trustFile), configFile, s3Endpoint);
    fleet.#main = main;
    await writeFile(
      configFile,
      JSON.stringify({
        cluster: fleet.cluster,
        bucket: `b-${fleet.cluster}`,
        trustFile,
        keyId: "oncall",
        signingKey: join(keys, "oncall.key"),
        heartbeatSeconds: 1,
        lostAfterSeconds: 4,
        fleetSnapshotSeconds: 1,
        coordinatorLeaseSeconds: 3,
        visibilityTimeoutSeconds: 5,
        shutdownDeadlineSeconds: 10,
        ...settings,
      }),
    );
    for (const id of ["oncall", "ci", "coordinator", "prober"]) fleet.signers.set(id, loadSigner(id, join(keys, `${id}.key`)));
    fleet.signers.set("rogue", loadSigner("rogue", join(dir, "rogue-keys", "rogue.key")));
    const topicArn = await ensureTopic(fleet.clients, fleet.cluster);
    fleet.#bus = new Bus({ clients: fleet.clients }, { topicArn });
    fleet.verifier = new EventVerifier(
      { trust: fleet.trust, keys: new NodeKeyDirectory({ store: new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` }) }, { topicArn }) },
      { maxBytes: 262144 },
    );
    fleet.#watcher = await EventWatcher.open({ clients: fleet.clients, verifier: fleet.verifier }, { cluster: fleet.cluster, topicArn, leaseSeconds: 3600 });
    fleet.#watchLoop = (async () => {
      for await (const item of fleet.#watcher!.events(fleet.#watching.signal)) if (item.ok) fleet.events.push(item.envelope);
    })();
    // Ensure the bucket exists the way `bosun init` makes it.
    await fleet.bosun(["init", "--json"]);
    return fleet;
  }

  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return {
      PATH: process.env["PATH"],
      HOME: process.env["HOME"],
      AWS_ENDPOINT_URL: this.#processEndpoint ?? this.emulator.endpoint,
      ...(this.#s3Endpoint ? { AWS_ENDPOINT_URL_S3: this.#s3Endpoint } : {}),
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      BOSUN_CONFIG: this.configFile,
      ...extra,
    };
  }

  /** Starts `bosun agent` for a node and waits until it is receiving. */
  async startAgent(nodeId: string, roles: string[], env: Record<string, string> = {}): Promise<TestProcess> {
    // Each agent makes and registers its own key in its state directory.
    const proc = this.spawn(nodeId, ["agent", "--node-id", nodeId, ...roles.flatMap((r) => ["--role", r])], {
      BOSUN_STATE_DIR: this.stateDir(nodeId),
      ...env,
    });
    await Promise.race([
      proc.waitForLog((r) => r.msg === "agent running", `${nodeId} to start`, 20_000),
      proc.exited.then((e) => Promise.reject(new Error(`${nodeId} exited early with ${e.code ?? e.signal}`))),
    ]);
    return proc;
  }

  async startCoordinator(env: Record<string, string> = {}): Promise<TestProcess> {
    const proc = this.spawn("coordinator", ["coordinator"], {
      BOSUN_KEY_ID: "coordinator",
      BOSUN_SIGNING_KEY: join(this.dir, "keys", "coordinator.key"),
      ...env,
    });
    await proc.waitForLog((r) => r.msg === "coordinator running", "the coordinator to start", 20_000);
    return proc;
  }

  /** Waits until the coordinator's fleet snapshot lists each node as up (what `bosun nodes` and `--wait` read). */
  async waitForNodes(ids: readonly string[], timeoutMs = 20_000): Promise<void> {
    const store = new StateStore({ clients: this.clients }, { bucket: `b-${this.cluster}` });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const snapshot = await store.get<{ nodes: { id: string; status: string }[] }>("state/fleet.json");
      const up = new Set((snapshot?.nodes ?? []).filter((n) => n.status === "up").map((n) => n.id));
      if (ids.every((id) => up.has(id))) return;
      if (Date.now() > deadline) throw new Error(`timed out waiting for the fleet snapshot to list ${ids.filter((id) => !up.has(id)).join(", ")} as up`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  stateDir(nodeId: string): string {
    return join(this.dir, "nodes", nodeId);
  }

  spawn(name: string, args: string[], env: Record<string, string> = {}): TestProcess {
    const logs = new Waitable<LogRecord>();
    const proc = spawnBosun({
      name,
      args,
      env: this.env(env),
      main: this.#main,
      onLine: (line) => {
        try {
          logs.push(JSON.parse(line) as LogRecord);
        } catch {
          logs.push({ msg: line, raw: true });
        }
      },
    });
    const test: TestProcess = {
      ...proc,
      logs,
      waitForLog: (match, what, timeoutMs = 15_000) => logs.wait(match, timeoutMs, `${name}: ${what}`),
    };
    this.processes.push(test);
    return test;
  }

  /** Runs a `bosun` command to completion and returns its output and exit code. */
  async bosun(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const proc = spawnBosun({ name: "cli", args, env: this.env(env), main: this.#main, onLine: (line, stream) => (stream === "stdout" ? out : err).push(line) });
    const { code } = await proc.exited;
    return { code, stdout: out.join("\n"), stderr: err.join("\n") };
  }

  command(type: string, payload: unknown, target: NewMessage["target"], options: { key?: string; ttlSeconds?: number; now?: Date } = {}): Envelope {
    return createMessage(this.signers.get(options.key ?? "oncall")!, {
      kind: "command",
      type,
      payload,
      target,
      ttlSeconds: options.ttlSeconds ?? 300,
      ...(options.now ? { now: options.now } : {}),
    });
  }

  /**
   * A node-up or node-down of a node announced by hand (no agent runs for it), signed as the
   * coordinator signs the node-downs of lost nodes; a node-up says where its site is reached.
   */
  nodeEvent(type: "node-up" | "node-down", node: string, options: { host?: string; port?: number; roles?: string[] } = {}): Envelope {
    const roles = options.roles ?? ["web"];
    const address = { host: options.host ?? "127.0.0.1", port: options.port ?? 8080 };
    return createMessage(this.signers.get("coordinator")!, {
      kind: "event",
      type,
      correlationId: `${type}-${node}-${Date.now()}`,
      ttlSeconds: 300,
      payload:
        type === "node-up"
          ? { node: { id: node, roles }, version: "test", startedAt: new Date().toISOString(), pid: 1, report: { web: { releases: {}, address } } }
          : { node: { id: node, roles }, reason: "decommissioned" },
    });
  }

  async publish(envelope: Envelope): Promise<void> {
    await this.#bus!.publish(envelope);
  }

  async publishRaw(body: string, attributes: Record<string, string>): Promise<void> {
    await this.#bus!.publishRaw(body, attributes);
  }

  waitForEvent(match: (e: Envelope) => boolean, what: string, timeoutMs = 15_000): Promise<Envelope> {
    return this.events.wait(match, timeoutMs, what);
  }

  eventsFor(commandId: string, type?: string): Envelope[] {
    return this.events.items.filter((e) => e.correlationId === commandId && (!type || e.type === type));
  }

  /** The first event of `type` about a command from a node. */
  waitForNodeEvent(commandId: string, nodeId: string, type: string, timeoutMs = 15_000): Promise<Envelope> {
    return this.waitForEvent(
      (e) => e.correlationId === commandId && e.type === type && (e.payload as { node: { id: string } }).node.id === nodeId,
      `${type} from ${nodeId} for ${commandId}`,
      timeoutMs,
    );
  }

  /** Makes a node's queue as its agent does at start, so messages can wait for an agent not yet running. */
  async createNodeQueue(nodeId: string, roles: string[]): Promise<void> {
    await ensureSubscribedQueue(this.clients, this.#bus!.topicArn, names.nodeQueue(this.cluster, nodeId), nodeFilterPolicy(nodeId, roles), { visibilityTimeoutSeconds: 5 });
  }

  /** The cluster's topic ARN, as agents find it. */
  get topicArn(): string {
    return this.#bus!.topicArn;
  }

  /** Writes an object to the cluster's bucket as it is: tests that plant records a node must refuse. */
  async putObject(key: string, body: unknown): Promise<void> {
    await new StateStore({ clients: this.clients }, { bucket: `b-${this.cluster}` }).put(key, body);
  }

  nodeQueueName(nodeId: string): string {
    return names.nodeQueue(this.cluster, nodeId);
  }

  async close(): Promise<void> {
    const errors: unknown[] = [];
    await Promise.allSettled(this.processes.map((p) => p.stop(15_000)));
    this.#watching.abort();
    await this.#watchLoop?.catch((e: unknown) => errors.push(e));
    await this.#watcher?.close().catch((e: unknown) => errors.push(e));
    destroyAwsClients(this.clients);
    await this.emulator.stop().catch((e: unknown) => errors.push(e));
    await rm(this.dir, { recursive: true, force: true });
    if (errors.length) throw new AggregateError(errors, "test fleet did not close cleanly");
  }
}
