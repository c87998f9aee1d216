/**
 * What an idle fleet costs in AWS requests: an agent per node and the coordinator, at the
 * default settings (heartbeat 15 s, 20 s long polls, fleet snapshot every 10 s), counted as they
 * reach the emulator through a counting proxy, per request type. Beside it, in the same run and
 * on the same events, the design before this one: the coordinator wrote each node's record on
 * every heartbeat (one S3 PUT per heartbeat per node), and `bosun nodes` listed and read one
 * object per node. Prints requests per node-hour and the monthly bill at 1,000 nodes.
 *
 *   npx node bench/cost.ts [--quick] [--agents N] [--seconds S] [--output PATH]
 *
 * Prices, us-east-1 (verify on aws.amazon.com/{s3,sqs,sns}/pricing): S3 PUT/LIST $0.005 and GET
 * $0.0004 per 1,000; SQS $0.40 and SNS publish $0.50 per million (SNS to SQS delivery is free).
 */
import { createServer, request, type IncomingMessage } from "node:http";
import { once } from "node:events";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ReceiveMessageCommand, DeleteMessageBatchCommand } from "@aws-sdk/client-sqs";
import { ensureSubscribedQueue, names, StateStore, verifyItem } from "@bosun/aws";
import { applyEvent, fleetEvent, type NodeRecord } from "@bosun/coordinator";
import { TestFleet, type TestProcess } from "../test/helpers/fleet.ts";
import { growFleet } from "./agents.ts";
import { benchPeakRssMb, machine, parseBenchArgs, positiveInt, progress, runBenchmark, wallSeconds, type CommonOptions, type Machine, type ReportBase } from "./harness.ts";
import { renderTable, round } from "./stats.ts";

const benchDir = dirname(fileURLToPath(import.meta.url));
const HOURS_A_MONTH = 730;
const FLEET = 1000;

/** USD per request. */
const price: Record<string, number> = {
  "s3:PUT": 0.005 / 1000,
  "s3:LIST": 0.005 / 1000,
  "s3:GET": 0.0004 / 1000,
  "s3:HEAD": 0.0004 / 1000,
  "s3:DELETE": 0,
  "sns:Publish": 0.5 / 1e6,
};
const priceOf = (kind: string) => price[kind] ?? (kind.startsWith("sqs:") ? 0.4 / 1e6 : kind.startsWith("sns:") ? 0.5 / 1e6 : 0);

interface Options extends CommonOptions {
  agents: number;
  seconds: number;
}

interface Row {
  kind: string;
  /** Requests per node-hour of an idle fleet: Bosun, and the design before. */
  bosun: number;
  before: number;
  /** What the design's requests cost a month at 1,000 nodes, in USD. */
  bosunMonthly: number;
  beforeMonthly: number;
  /** Whether the count grows with the fleet (per node) or not (the coordinator's own). */
  scales: "per node" | "per fleet";
}

interface Report extends ReportBase {
  machine: Machine;
  agents: number;
  seconds: number;
  rows: Row[];
  totals: { bosunMonthly: number; beforeMonthly: number };
  nodesCommand: { bosun: string; before: string };
}

/** Which AWS request an HTTP request to the emulator is. */
function classify(req: IncomingMessage, body: string): string {
  const target = req.headers["x-amz-target"];
  if (typeof target === "string" && target.startsWith("AmazonSQS.")) return `sqs:${target.slice("AmazonSQS.".length)}`;
  const action = /(?:^|&)Action=([A-Za-z]+)/.exec(body)?.[1];
  if (action) return `${/(Publish|Subscribe|Topic|Subscription)/.test(action) ? "sns" : "sqs"}:${action}`;
  const url = new URL(req.url ?? "/", "http://x");
  if (req.method === "GET") return url.searchParams.has("list-type") || url.pathname.split("/").filter(Boolean).length <= 1 ? "s3:LIST" : "s3:GET";
  return `s3:${req.method}`;
}

/** A proxy in front of the emulator that counts what passes, by request type. */
async function countingProxy(target: string): Promise<{ endpoint: string; counts: Map<string, number>; reset(): void; close(): Promise<void> }> {
  const upstream = new URL(target);
  const counts = new Map<string, number>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const kind = classify(req, body.toString("utf8"));
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
      const forward = request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
        (reply) => {
          res.writeHead(reply.statusCode ?? 502, reply.headers);
          reply.pipe(res);
        },
      );
      forward.on("error", () => res.destroy());
      forward.end(body);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    counts,
    reset: () => counts.clear(),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/**
 * The design before, on the same events: a second queue on the bus sees every event the
 * coordinator sees, and for each one does what the coordinator used to: write the node's
 * record (a PUT) when it changed or was a heartbeat. Its PUTs go to the emulator directly and
 * are counted here.
 */
async function previousDesign(fleet: TestFleet, signal: AbortSignal): Promise<{ puts: () => number; events: () => number; done: Promise<void> }> {
  const queue = await ensureSubscribedQueue(fleet.clients, fleet.topicArn, names.watchQueue(fleet.cluster, "previous-design"), { kind: ["event"] }, { visibilityTimeoutSeconds: 30 });
  const store = new StateStore({ clients: fleet.clients }, { bucket: `b-${fleet.cluster}` });
  const nodes = new Map<string, NodeRecord>();
  let puts = 0;
  let events = 0;
  const done = (async () => {
    while (!signal.aborted) {
      const out = await fleet.clients.sqs.send(new ReceiveMessageCommand({ QueueUrl: queue.url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }), { abortSignal: signal }).catch(() => ({ Messages: [] }));
      const messages = out.Messages ?? [];
      if (messages.length) await fleet.clients.sqs.send(new DeleteMessageBatchCommand({ QueueUrl: queue.url, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }));
      for (const message of messages) {
        const item = await verifyItem(fleet.verifier, message.Body ?? "");
        if (!item.ok) continue;
        events += 1;
        const event = fleetEvent(item.envelope);
        const applied = applyEvent(event.payload.node && nodes.get(event.payload.node.id), event);
        if (!applied) continue;
        nodes.set(applied.record.id, applied.record);
        if (applied.changed || event.type === "heartbeat") {
          puts += 1;
          await store.put(`previous-design/nodes/${applied.record.id}.json`, applied.record);
        }
      }
    }
  })();
  return { puts: () => puts, events: () => events, done };
}

async function run(options: Options): Promise<Report> {
  let proxy: Awaited<ReturnType<typeof countingProxy>> | undefined;
  // Default timing settings: what an idle production fleet does.
  const fleet = await TestFleet.start(
    { heartbeatSeconds: 15, lostAfterSeconds: 60, fleetSnapshotSeconds: 10, coordinatorLeaseSeconds: 30, visibilityTimeoutSeconds: 30 },
    { processEndpoint: async (endpoint) => (proxy = await countingProxy(endpoint)).endpoint },
  );
  const stopping = new AbortController();
  try {
    await fleet.startCoordinator();
    const agents: TestProcess[] = [];
    progress(`starting ${options.agents} agents`);
    await growFleet(fleet, agents, options.agents, 10);
    await fleet.waitForNodes(agents.map((a) => a.name), 60_000);
    const before = await previousDesign(fleet, stopping.signal);
    // Start-up traffic (queues, subscriptions, key registrations) is not the idle fleet's.
    await new Promise((r) => setTimeout(r, 2000));
    proxy!.reset();
    const putsAtStart = before.puts();
    const eventsAtStart = before.events();
    progress(`idle for ${options.seconds} s, counting every request`);
    await new Promise((r) => setTimeout(r, options.seconds * 1000));
    const counts = new Map(proxy!.counts);
    const previousPuts = before.puts() - putsAtStart;
    const previousEvents = before.events() - eventsAtStart;
    stopping.abort();
    await before.done;

    const nodeHours = (options.agents * options.seconds) / 3600;
    const fleetHours = options.seconds / 3600;
    // The coordinator's own writes (the snapshot, the lease) do not grow with the fleet; its reads
    // of nodes' keys (once every few minutes a node) do.
    const perFleet = (kind: string) => kind === "s3:PUT";
    // The design before: the same bus traffic, but a PUT per heartbeat per node, no lease or
    // snapshot, and the coordinator deleted each event on its own (no batches).
    const then = new Map(counts);
    for (const kind of [...then.keys()]) if (kind.startsWith("s3:")) then.delete(kind);
    // Before, nobody read nodes' keys: there were none.
    then.delete("sqs:DeleteMessageBatch");
    then.set("sqs:DeleteMessage", (counts.get("sqs:DeleteMessage") ?? 0) + previousEvents);
    const rows: Row[] = [];
    for (const kind of [...new Set([...counts.keys(), ...then.keys(), "s3:PUT"])].sort()) {
      const rate = (count: number) => (perFleet(kind) ? count / fleetHours / FLEET : count / nodeHours);
      const bosun = rate(counts.get(kind) ?? 0);
      const previous = kind === "s3:PUT" ? previousPuts / nodeHours : rate(then.get(kind) ?? 0);
      rows.push({
        kind,
        bosun: round(bosun, 2),
        before: round(previous, 2),
        bosunMonthly: round(bosun * FLEET * HOURS_A_MONTH * priceOf(kind), 2),
        beforeMonthly: round(previous * FLEET * HOURS_A_MONTH * priceOf(kind), 2),
        scales: perFleet(kind) ? "per fleet" : "per node",
      });
    }
    const totals = { bosunMonthly: round(rows.reduce((a, r) => a + r.bosunMonthly, 0), 2), beforeMonthly: round(rows.reduce((a, r) => a + r.beforeMonthly, 0), 2) };
    const nodesCommand = { bosun: "1 GET (the fleet snapshot)", before: `1 LIST and ${FLEET} GETs (one object per node), about $${round((FLEET * 0.0004) / 1000 + 0.005 / 1000, 5)} a call at 1,000 nodes` };
    return { machine: machine(), agents: options.agents, seconds: options.seconds, rows, totals, nodesCommand, benchProcessPeakRssMb: benchPeakRssMb(), wallSeconds: wallSeconds() };
  } finally {
    stopping.abort();
    await fleet.close();
    await proxy?.close();
  }
}

function render(report: Report): string {
  return [
    `Idle fleet: ${report.agents} agents and a coordinator for ${report.seconds} s at the default settings; requests per node-hour, and a month at ${FLEET} nodes.`,
    `"per fleet" rows are the coordinator's own requests, which do not grow with the nodes; they are shown divided by ${FLEET} nodes.`,
    renderTable(
      ["request", "grows", "bosun / node-h", "before / node-h", `bosun, ${FLEET} nodes, a month`, `before, ${FLEET} nodes, a month`],
      report.rows.map((r) => [r.kind, r.scales, String(r.bosun), String(r.before), `$${r.bosunMonthly.toFixed(2)}`, `$${r.beforeMonthly.toFixed(2)}`]),
    ),
    `total a month at ${FLEET} nodes: bosun $${report.totals.bosunMonthly.toFixed(2)}, the design before $${report.totals.beforeMonthly.toFixed(2)}`,
    `bosun nodes, releases and --wait read: bosun ${report.nodesCommand.bosun}; before ${report.nodesCommand.before}`,
  ].join("\n");
}

process.exitCode = await runBenchmark<Options, Report>(
  {
    parse(argv) {
      const values = parseBenchArgs(argv, { agents: { type: "string" }, seconds: { type: "string" } });
      const quick = values.quick === true;
      return {
        mode: quick ? "quick" : "full",
        output: resolve(values.output ?? join(benchDir, "results", quick ? "cost-quick.json" : "cost.json")),
        check: values.check === true,
        agents: values.agents ? positiveInt("agents", values.agents, 200) : quick ? 5 : 10,
        seconds: values.seconds ? positiveInt("seconds", values.seconds, 3600) : quick ? 45 : 180,
      };
    },
    run: (options) => run(options),
    render,
    hosts: "the emulator, the counting proxy and the previous design's event consumer",
    missed: () => false,
    stopping: "the agents, the coordinator and the emulator",
  },
  process.argv.slice(2),
);


