import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { z } from "zod";
import { ConfigError } from "./errors.ts";

const id = z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, "expected 1-32 lower-case letters, digits or '-'");
const seconds = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** Settings given as JSON text in a variable; text that is not JSON fails the schema with the value shown. */
const json = (v: unknown) => {
  if (typeof v !== "string") return v;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v;
  }
};

export const appNamePattern = /^[a-z0-9][a-z0-9-]{0,63}$/;

/**
 * Limits on all of a node's builds together, in a cgroup of their own. `true` takes the defaults;
 * false (the default) leaves builds in the agent's cgroup, with their per-process limits only.
 */
export const buildCgroupSchema = z.union([
  z.literal(false),
  z.literal(true).transform(() => ({ memoryPercent: 50, cpuPercent: 100, tasks: 1024 })),
  z
    .object({
      /** Memory (page cache included) all builds may hold, as a share of the machine's memory (cgroup memory.max). */
      memoryPercent: z.number().int().min(5).max(95).default(50),
      /** CPU time all builds may take, in percent of one CPU (cgroup cpu.max): 100 is one CPU's worth. */
      cpuPercent: z.number().int().min(10).max(100000).default(100),
      /** Processes and threads all builds may have at once (cgroup pids.max). */
      tasks: z.number().int().min(16).max(1048576).default(1024),
    })
    .strict(),
]);
export type BuildCgroupSettings = Exclude<z.infer<typeof buildCgroupSchema>, false>;

/** A web app as one node serves it: where it lives, where it may come from, how it is built and checked. */
export const appSchema = z
  .object({
    /** The app's deploy root: releases/<commit>, the `current` symlink, a git mirror, state.json. */
    root: z.string().min(1),
    /** Repository URLs releases may come from; anything else is refused. */
    repos: z.array(z.string().min(1).regex(/^[^-]/, "a repository may not start with '-'")).min(1),
    build: z
      .object({
        command: z.array(z.string().min(1)).min(1),
        timeoutSeconds: z.number().int().min(1).max(86400).default(600),
        /**
         * The unprivileged user builds run as, so the repository's code cannot read the agent's
         * keys or ledger, nor write outside the tree it builds. `false` runs builds as the agent
         * itself (only for a developer's own machine).
         */
        user: z.union([z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, "expected a user name"), z.literal(false)]).default("bosun-build"),
        /** Processes the build user may have at once (RLIMIT_NPROC). */
        processes: z.number().int().min(8).max(65536).default(512),
        /** Memory a build process may allocate (RLIMIT_DATA), in MiB. */
        memoryMB: z.number().int().min(16).max(1048576).default(4096),
        /** Largest file a build may write, in MiB (RLIMIT_FSIZE). */
        fileMB: z.number().int().min(1).max(1048576).default(1024),
      })
      .strict()
      .optional(),
    health: z
      .object({
        url: z.url(),
        status: z.number().int().min(100).max(599).default(200),
        /** The body must contain the release's commit id (Bosun writes it to `.bosun-release` in each release). */
        marker: z.boolean().default(false),
        timeoutSeconds: z.number().min(0.1).max(300).default(5),
        attempts: z.number().int().min(1).max(60).default(3),
      })
      .strict()
      .optional(),
    /** How large a release and a fetch may be, and the room a fetch must leave on the deploy root's filesystem. */
    limits: z
      .object({
        releaseMB: z.number().int().min(1).max(1048576).default(2048),
        fetchMB: z.number().int().min(1).max(1048576).default(2048),
        minFreeMB: z.number().int().min(0).max(1048576).default(256),
      })
      .strict()
      .default({ releaseMB: 2048, fetchMB: 2048, minFreeMB: 256 }),
    /** Releases kept on disk, besides the current and previous ones; failed ones do not count. */
    keep: z.number().int().min(0).max(100).default(3),
    /** How long a release that stopped being current stays on disk, so requests reading it finish. */
    graceSeconds: z.number().int().min(0).max(86400).default(300),
  })
  .strict();
export type AppSettings = z.infer<typeof appSchema>;

const argv = z.array(z.string().min(1)).min(1);

/** The database this node's db role looks after, and how it is backed up. */
export const dbSchema = z
  .object({
    engine: z.literal("mariadb").default("mariadb"),
    /** How the agent reaches its server: a socket, or a host and port. */
    socket: z.string().min(1).optional(),
    host: z.string().min(1).default("127.0.0.1"),
    port: z.number().int().min(1).max(65535).default(3306),
    user: z.string().min(1).default("root"),
    /** A file holding the password (0600); passwords never travel in settings, messages or argv. */
    passwordFile: z.string().min(1).optional(),
    /** The server's data directory, replaced by a physical restore. */
    dataDir: z.string().min(1).default("/var/lib/mysql"),
    /** How the agent stops and starts its server (a physical restore replaces the data directory in between). */
    stopCommand: argv.default(["systemctl", "stop", "mariadb"]),
    startCommand: argv.default(["systemctl", "start", "mariadb"]),
    /** The account a restored server replicates with (REPLICATION SLAVE on the primary); its password in a file. */
    replicationUser: z.string().min(1).default("repl"),
    replicationPasswordFile: z.string().min(1).optional(),
    /** Where other servers reach this one to replicate from it (reported in heartbeats, used by `bosun restore --replica-of primary`). */
    advertise: z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict().optional(),
    /** This server is a replica set aside for backups: backups stop its SQL thread, never the primary's writes. */
    backupReplica: z.boolean().default(false),
    /** Where drills and restores stage files (a scratch server, an extracted physical backup). */
    scratchDir: z.string().min(1).optional(),
    backup: z
      .object({
        kind: z.enum(["logical", "physical", "ebs"]).default("logical"),
        compression: z.enum(["zstd", "gzip"]).default("zstd"),
        /** A file holding a 32-byte key: snapshots are encrypted on the node (AES-256-GCM) before they leave it. */
        encryptionKeyFile: z.string().min(1).optional(),
        /** Multipart part size: memory per upload is about four parts; 10,000 parts bound the object's size. */
        partMB: z.number().int().min(5).max(5120).default(16),
        /** The EBS volume that holds the data directory, for `ebs` snapshots. */
        ebsVolumeId: z.string().regex(/^vol-[0-9a-f]+$/).optional(),
      })
      .strict()
      .default({ kind: "logical", compression: "zstd", partMB: 16 }),
    /**
     * Binary-log shipping to S3. "auto" ships while this server is a primary with binary logging
     * on (a replica's binary log repeats its primary's history, which the primary ships); "on"
     * ships on a replica too, under its own server name; "off" never.
     */
    shipping: z
      .object({
        enabled: z.enum(["auto", "on", "off"]).default("auto"),
        /** How often new bytes are looked for and shipped: a commit is in S3 about this long after it is written, plus the upload. */
        intervalMs: z.number().int().min(100).max(60_000).default(1000),
        /** The largest segment: a backlog (after S3 was away) goes up in pieces of this size at the most. */
        maxSegmentMB: z.number().int().min(1).max(256).default(8),
        /** An alert when the oldest byte not yet in S3 was written longer ago than this. */
        behindAlertSeconds: z.number().int().min(1).max(86_400).default(60),
        /** While behind: an alert when a file not yet shipped will be purged (binlog_expire_logs_seconds) within this long. */
        purgeWarnSeconds: z.number().int().min(1).max(30 * 86_400).default(3600),
        /**
         * Zero-loss mode (opt-in, on a primary): the agent is a semi-synchronous replica of its own
         * server and acknowledges a commit only once it is in S3, so a commit returns to the
         * application only then; after timeoutMs without an acknowledgement the server goes on
         * asynchronously (and the agent says so). serverId: the id the agent's replication
         * connection uses, unique among the cluster's servers.
         */
        zeroLoss: z
          .object({
            enabled: z.boolean().default(false),
            timeoutMs: z.number().int().min(100).max(600_000).default(2000),
            serverId: z.number().int().min(1).max(4_294_967_295).default(4_294_967_000),
          })
          .strict()
          .default({ enabled: false, timeoutMs: 2000, serverId: 4_294_967_000 }),
      })
      .strict()
      .default({ enabled: "auto", intervalMs: 1000, maxSegmentMB: 8, behindAlertSeconds: 60, purgeWarnSeconds: 3600, zeroLoss: { enabled: false, timeoutMs: 2000, serverId: 4_294_967_000 } }),
    /** How often a replica's replication is looked at, and the lag that raises an alert. */
    health: z
      .object({
        intervalSeconds: z.number().int().min(1).max(3600).default(5),
        lagAlertSeconds: z.number().int().min(1).max(86_400).default(30),
      })
      .strict()
      .default({ intervalSeconds: 5, lagAlertSeconds: 30 }),
  })
  .strict();
export type DbSettings = z.infer<typeof dbSchema>;

/** Where a web node's site is reached by the balancers (reported in its node-up and heartbeats). */
export const webSchema = z
  .object({
    advertise: z.object({ host: z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/, "expected an IP address or a host name"), port: z.number().int().min(1).max(65535) }).strict().optional(),
    /** When the node is decommissioned: how long its agent waits for the balancers to drain it before it stops. */
    leaveTimeoutSeconds: z.number().int().min(0).max(3600).default(120),
  })
  .strict();
export type WebSettings = z.infer<typeof webSchema>;

const networksSchema = z.array(z.string().regex(/^[0-9a-fA-F.:]+\/[0-9]{1,3}$/, "expected a network such as 10.0.0.0/16")).default([]);

/** The balancer role's HAProxy: where it listens, how it checks web nodes, how it drains them. */
export const balancerSchema = z
  .object({
    /** The HAProxy program; the agent runs it (master-worker) and stops it when the agent stops. */
    haproxy: z.string().min(1).default("haproxy"),
    /** Where haproxy.cfg, the runtime socket and the server-state file live (default: <stateDir>/haproxy). */
    dir: z.string().min(1).optional(),
    listen: z
      .object({ host: z.string().regex(/^[A-Za-z0-9.:*-]{1,253}$/, "expected an address to bind").default("0.0.0.0"), port: z.number().int().min(1).max(65535).default(80) })
      .strict()
      .default({ host: "0.0.0.0", port: 80 }),
    /** The HAProxy backend that holds the web nodes. */
    backend: z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/, "expected a backend name of lower-case letters, digits, '_' or '-'").default("web"),
    /** HAProxy's own active checks on every web node: an HTTP GET of `path` every `interMs`; `fall` failures mark it down, `rise` successes up. */
    check: z
      .object({
        path: z.string().regex(/^\/[A-Za-z0-9._~\/-]*$/, "expected a path such as /health").default("/"),
        interMs: z.number().int().min(100).max(300_000).default(2000),
        fall: z.number().int().min(1).max(100).default(3),
        rise: z.number().int().min(1).max(100).default(2),
      })
      .strict()
      .default({ path: "/", interMs: 2000, fall: 3, rise: 2 }),
    /** How long `lb drain` waits for a node's sessions to finish before it takes the node out anyway. */
    drainTimeoutSeconds: z.number().int().min(0).max(86400).default(60),
    /** Node-ups and node-downs that come within this many ms of each other are applied as one update. */
    debounceMs: z.number().int().min(0).max(60_000).default(250),
    /** How often the agent reads HAProxy's view of its servers, for health events and its node record. */
    pollSeconds: z.number().min(0.2).max(3600).default(2),
    /** How often the agent compares its servers with the fleet record in S3 (a missed event is made good). */
    resyncSeconds: z.number().int().min(1).max(86400).default(30),
    /** Networks (CIDR) web nodes' addresses must lie in; empty: any address. */
    networks: networksSchema,
    /** A pair of balancers, one active holding the entry point, the other watching it (none: a single balancer). */
    pair: z
      .object({
        /** The other balancer's check URL: its HAProxy answers the monitor path itself, without a web node. */
        peer: z.url({ protocol: /^https?$/, error: "expected the other balancer's check URL, such as http://10.0.1.6/.bosun-lb" }),
        /** How often the peer is checked, and how long one check may take. */
        intervalMs: z.number().int().min(100).max(60_000).default(2000),
        timeoutMs: z.number().int().min(50).max(60_000).default(1000),
        /** Consecutive failed checks after which the standby takes the entry point over. */
        failures: z.number().int().min(1).max(100).default(3),
        /** Whether a recovered balancer takes the entry point back from a healthy peer (off: it stays standby). */
        failback: z.boolean().default(false),
        /**
         * The entry point: an Elastic IP associated with the active balancer's instance (the node id
         * is the instance id), or a Route 53 A record pointed at the active balancer's `address`,
         * held under a lease in S3 that the active renews every interval.
         */
        entry: z.discriminatedUnion("kind", [
          z.object({ kind: z.literal("eip"), allocationId: z.string().regex(/^eipalloc-[0-9a-f]+$/, "expected an Elastic IP allocation id such as eipalloc-0123abcd") }).strict(),
          z
            .object({
              kind: z.literal("route53"),
              hostedZoneId: z.string().regex(/^[A-Z0-9]{1,32}$/, "expected a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ"),
              name: z.string().regex(/^([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}\.?$/, "expected a record name such as www.example.com"),
              /** This balancer's public address: the record's value while it is active. */
              address: z.ipv4({ error: "expected this balancer's public IPv4 address" }),
              ttlSeconds: z.number().int().min(1).max(300).default(10),
            })
            .strict(),
        ]),
      })
      .strict()
      .optional(),
  })
  .strict();
export type BalancerSettings = z.infer<typeof balancerSchema>;
export type PairSettings = NonNullable<BalancerSettings["pair"]>;

/**
 * An AWS target group (in front of an Application or Network Load Balancer) that follows the web
 * nodes' node-up, node-down and drains, kept by the coordinator or by the balancer agents.
 */
export const targetGroupSchema = z
  .object({
    arn: z.string().regex(/^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup\/[A-Za-z0-9-]{1,32}\/[0-9a-f]{1,32}$/, "expected a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"),
    /** Who follows the events and registers targets: the leading coordinator, or every balancer agent (registration is idempotent). */
    runBy: z.enum(["coordinator", "balancer"]).default("coordinator"),
    /** The group's target type: web nodes registered by instance id (their node id) or by advertised IP address. */
    targetType: z.enum(["instance", "ip"]).default("instance"),
    /** Networks (CIDR) web nodes' advertised addresses must lie in; empty: any address. */
    networks: networksSchema,
  })
  .strict();
export type TargetGroupSettings = z.infer<typeof targetGroupSchema>;

/** How long backups are kept, grandfather-father-son, computed from what is in the bucket. */
export const retentionSchema = z
  .object({
    hourly: z.number().int().min(0).max(1000).default(24),
    daily: z.number().int().min(0).max(1000).default(7),
    weekly: z.number().int().min(0).max(1000).default(4),
    monthly: z.number().int().min(0).max(1000).default(6),
    /** A restore to any moment of the last `windowDays` days must stay possible. */
    windowDays: z.number().int().min(0).max(3650).default(7),
  })
  .strict();

export const backupsSchema = z
  .object({
    /** When the coordinator takes a backup (node-cron syntax); none by default. */
    schedule: z.string().min(9).optional(),
    /** When it restores the latest snapshot into a scratch server to prove it (weekly by default). */
    drillSchedule: z.string().min(9).default("0 0 4 * * 0"),
    retention: retentionSchema.default({ hourly: 24, daily: 7, weekly: 4, monthly: 6, windowDays: 7 }),
  })
  .strict();

/**
 * Bosun's own settings. Each has a name in the config file and a BOSUN_* variable;
 * AWS settings are the SDK's own (AWS_REGION, AWS_ENDPOINT_URL, the credential chain).
 */
export const settingsSchema = z.object({
  cluster: id.default("dev"),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{2,62}$/, "expected an S3 bucket name").default("bosun-dev"),
  stateDir: z.string().min(1).default(".bosun/state"),
  trustFile: z.string().min(1).default(".bosun/keys/trust.json"),
  keyId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "expected a key id of letters, digits, '_' or '-'").optional(),
  signingKey: z.string().min(1).optional(),
  concurrency: seconds(1, 64).default(4),
  visibilityTimeoutSeconds: seconds(2, 43200).default(30),
  heartbeatSeconds: seconds(1, 3600).default(15),
  shutdownDeadlineSeconds: seconds(1, 3600).default(60),
  lostAfterSeconds: seconds(2, 86400).default(60),
  /**
   * How long a node must have been silent, lost or decommissioned, before the coordinator
   * removes its queues, dead-letter queues and subscriptions (and with them what a person might
   * still read in the dead-letter queue).
   */
  nodeQueueGraceSeconds: seconds(1, 14 * 86400).default(86400),
  /** How long the coordinator's lease lasts unrenewed: a standby takes over this long after the leader dies. */
  coordinatorLeaseSeconds: seconds(3, 3600).default(30),
  /** How often, at most, the coordinator writes the fleet snapshot that `bosun nodes` reads. */
  fleetSnapshotSeconds: seconds(1, 3600).default(10),
  commandTtlSeconds: seconds(5, 86400).default(300),
  maxMessageBytes: seconds(1024, 262144).default(65536),
  /** Commands the coordinator publishes on a cron schedule (node-cron syntax, seconds optional). */
  /** Web apps this node serves (web nodes), and the repos a publisher may release from. */
  apps: z.preprocess(json, z.record(z.string().regex(appNamePattern, "expected an app name of lower-case letters, digits or '-'"), appSchema)).default({}),
  schedules: z
    .preprocess(
      json,
      z.array(
        z.object({
          name: z.string().regex(/^[a-z0-9-]{1,64}$/),
          cron: z.string().min(9),
          type: z.string().min(1),
          target: z.string().min(1),
          payload: z.record(z.string(), z.unknown()).default({}),
        }).strict(),
      ),
    )
    .default([]),
  /** The local emulator's address, written by `bosun dev`; used only when AWS_ENDPOINT_URL is unset. */
  /** The db role's database (db nodes). */
  db: z.preprocess(json, dbSchema).optional(),
  /**
   * Web nodes: run builds in a cgroup of their own below the agent's, with limits for all of
   * them together, so a build cannot starve the web server. Needs the cgroup that systemd
   * delegates to the agent's unit (deploy/systemd: Delegate=yes).
   */
  buildCgroup: z.preprocess(json, buildCgroupSchema).default(false),
  /** Where this web node is reached by the balancers (web nodes). */
  web: z.preprocess(json, webSchema).default({ leaveTimeoutSeconds: 120 }),
  /** The balancer role's HAProxy (balancer nodes). */
  balancer: z.preprocess(json, balancerSchema).optional(),
  /** An AWS target group that follows the web nodes (instead of, or beside, HAProxy balancers). */
  targetGroup: z.preprocess(json, targetGroupSchema).optional(),
  /** Backup schedules and retention (the coordinator and `bosun backup prune`). */
  backups: z.preprocess(json, backupsSchema).default({ drillSchedule: "0 0 4 * * 0", retention: { hourly: 24, daily: 7, weekly: 4, monthly: 6, windowDays: 7 } }),
  devEndpoint: z.url().optional(),
  logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
});

export type Settings = z.infer<typeof settingsSchema>;
export type SettingName = keyof Settings;

export const settingEnv: Record<SettingName, string> = {
  cluster: "BOSUN_CLUSTER",
  bucket: "BOSUN_BUCKET",
  stateDir: "BOSUN_STATE_DIR",
  trustFile: "BOSUN_TRUST_FILE",
  keyId: "BOSUN_KEY_ID",
  signingKey: "BOSUN_SIGNING_KEY",
  concurrency: "BOSUN_CONCURRENCY",
  visibilityTimeoutSeconds: "BOSUN_VISIBILITY_TIMEOUT",
  heartbeatSeconds: "BOSUN_HEARTBEAT_INTERVAL",
  shutdownDeadlineSeconds: "BOSUN_SHUTDOWN_DEADLINE",
  lostAfterSeconds: "BOSUN_LOST_AFTER",
  nodeQueueGraceSeconds: "BOSUN_NODE_QUEUE_GRACE",
  coordinatorLeaseSeconds: "BOSUN_COORDINATOR_LEASE",
  fleetSnapshotSeconds: "BOSUN_FLEET_SNAPSHOT",
  commandTtlSeconds: "BOSUN_COMMAND_TTL",
  maxMessageBytes: "BOSUN_MAX_MESSAGE_BYTES",
  apps: "BOSUN_APPS",
  schedules: "BOSUN_SCHEDULES",
  db: "BOSUN_DB",
  web: "BOSUN_WEB",
  buildCgroup: "BOSUN_BUILD_CGROUP",
  balancer: "BOSUN_BALANCER",
  targetGroup: "BOSUN_TARGET_GROUP",
  backups: "BOSUN_BACKUPS",
  devEndpoint: "BOSUN_DEV_ENDPOINT",
  logLevel: "BOSUN_LOG_LEVEL",
};

/** Where the config file is looked for when neither --config nor BOSUN_CONFIG names one. */
export const defaultConfigPaths = ["bosun.json", ".bosun/dev/bosun.json"];

export interface LoadSettingsOptions {
  /** Explicit config file (from --config); a missing explicit file is an error. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags; they win over the file and the environment. */
  overrides?: Partial<Record<SettingName, unknown>>;
  cwd?: string;
}

type Source = { value: unknown; from: string };

/**
 * Reads the config file, then BOSUN_* variables, then flags, and validates the lot once.
 * A bad value throws a ConfigError naming where it came from and what was received.
 */
export function loadSettings(options: LoadSettingsOptions = {}): Settings & { configFile?: string } {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const explicit = options.file ?? env["BOSUN_CONFIG"];
  const sources = new Map<SettingName, Source>();
  let configFile: string | undefined;

  const candidates = explicit ? [explicit] : defaultConfigPaths;
  for (const candidate of candidates) {
    const path = resolve(cwd, candidate);
    const text = readOptional(path, explicit !== undefined);
    if (text === undefined) continue;
    configFile = path;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (cause) {
      throw new ConfigError(`Config file ${path} is not valid JSON: ${(cause as Error).message}`, { cause });
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError(`Config file ${path} must hold a JSON object, received ${JSON.stringify(parsed)}`);
    }
    for (const [key, value] of Object.entries(parsed)) {
      if (!(key in settingEnv)) {
        throw new ConfigError(`Unknown setting "${key}" in ${path}; known settings: ${Object.keys(settingEnv).join(", ")}`);
      }
      sources.set(key as SettingName, { value, from: `setting "${key}" in ${path}` });
    }
    break;
  }
  for (const [name, variable] of Object.entries(settingEnv) as [SettingName, string][]) {
    const value = env[variable];
    if (value !== undefined && value !== "") sources.set(name, { value, from: variable });
  }
  for (const [name, value] of Object.entries(options.overrides ?? {}) as [SettingName, unknown][]) {
    if (value !== undefined) sources.set(name, { value, from: `--${kebab(name)}` });
  }

  const input: Record<string, unknown> = {};
  for (const [name, source] of sources) input[name] = source.value;
  const result = settingsSchema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const name = issue.path[0] as SettingName;
    const source = sources.get(name);
    const where = source?.from ?? `setting "${name}"`;
    throw new ConfigError(`Invalid ${where}: ${issue.message}, received ${JSON.stringify(source?.value)}`);
  }
  const settings = result.data;
  const base = configFile ? resolve(configFile, "..") : cwd;
  // Paths in a config file are relative to that file, so a dev fleet's config works from any directory.
  for (const key of ["stateDir", "trustFile", "signingKey"] as const) {
    const value = settings[key];
    if (value !== undefined) {
      const fromFile = sources.get(key)?.from.startsWith("setting") ?? false;
      settings[key] = resolve(fromFile ? base : cwd, value);
    }
  }
  const appsFromFile = sources.get("apps")?.from.startsWith("setting") ?? false;
  for (const app of Object.values(settings.apps)) app.root = resolve(appsFromFile ? base : cwd, app.root);
  if (settings.db) {
    const dbBase = sources.get("db")?.from.startsWith("setting") ? base : cwd;
    const db = settings.db;
    db.dataDir = resolve(dbBase, db.dataDir);
    if (db.socket) db.socket = resolve(dbBase, db.socket);
    if (db.passwordFile) db.passwordFile = resolve(dbBase, db.passwordFile);
    if (db.replicationPasswordFile) db.replicationPasswordFile = resolve(dbBase, db.replicationPasswordFile);
    if (db.scratchDir) db.scratchDir = resolve(dbBase, db.scratchDir);
    if (db.backup.encryptionKeyFile) db.backup.encryptionKeyFile = resolve(dbBase, db.backup.encryptionKeyFile);
  }
  if (settings.balancer?.dir) settings.balancer.dir = resolve(sources.get("balancer")?.from.startsWith("setting") ? base : cwd, settings.balancer.dir);
  return configFile ? { ...settings, configFile } : settings;
}

function readOptional(path: string, required: boolean): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (cause) {
    if (!required && (cause as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ConfigError(`Cannot read config file ${path}: ${(cause as Error).message}`, { cause });
  }
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
