import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { balancerSchema, loadSettings } from "@bosun/core";
import { applyFact, desiredServers, FLEET_LAG_MS, fleetFacts, planServers, type WebFact } from "../src/roles/balancer/backends.ts";
import { healthOf, parseServerLines } from "../src/roles/balancer/balancer.ts";
import { renderConfig } from "../src/roles/balancer/haproxy.ts";
import { runtimeCommand } from "../src/roles/balancer/runtime.ts";
import { factOf } from "../src/roles/balancer/index.ts";

const fact = (node: string, up: boolean, at: number, source: WebFact["source"] = "event", port = 8080): WebFact => ({ node, up, at, source, ...(up ? { address: { host: "10.0.0.5", port } } : {}) });

describe("the balancer's view of the web nodes", () => {
  it("events: the newer wins, whatever order they come in", () => {
    const up = fact("web-1", true, 1000);
    const down = fact("web-1", false, 2000);
    assert.equal(applyFact(applyFact(undefined, up), down).up, false);
    assert.equal(applyFact(applyFact(undefined, down), up).up, false, "an older node-up arriving late does not bring a node back");
  });

  it("the fleet record fills in, but overrules an event only when written well after it", () => {
    const event = fact("web-1", true, 10_000);
    assert.equal(applyFact(event, fact("web-1", false, 10_000 + FLEET_LAG_MS - 1, "fleet")).up, true, "a record that may not know the event yet");
    assert.equal(applyFact(event, fact("web-1", false, 10_000 + FLEET_LAG_MS + 1, "fleet")).up, false, "a missed node-down made good");
    assert.equal(applyFact(fact("web-1", false, 50_000, "fleet"), fact("web-1", true, 1000)).up, true, "any event beats the record");
  });

  it("only up web nodes with an address inside the allowed networks become servers", () => {
    const { servers, refused } = desiredServers(
      [fact("a", true, 1), fact("b", false, 1), { node: "c", up: true, at: 1, source: "event" }, { node: "d", up: true, at: 1, source: "event", address: { host: "192.168.1.9", port: 80 } }, { node: "e", up: true, at: 1, source: "event", address: { host: "::1", port: 81 } }],
      ["10.0.0.0/8", "::1/128"],
    );
    assert.deepEqual([...servers], [["a", "10.0.0.5:8080"], ["e", "[::1]:81"]]);
    assert.deepEqual(refused.map((r) => r.node), ["c", "d"]);
    assert.match(refused[1]!.reason, /192\.168\.1\.9 is outside the allowed networks 10\.0\.0\.0\/8, ::1\/128/);
    assert.equal(desiredServers([{ node: "d", up: true, at: 1, source: "event", address: { host: "192.168.1.9", port: 80 } }], []).servers.size, 1, "no networks: any address");
  });

  it("a plan adds what is missing, removes what left, moves a changed address, and leaves a node already present alone", () => {
    const plan = planServers(new Map([["a", "1.1.1.1:80"], ["b", "2.2.2.2:80"], ["c", "3.3.3.3:81"]]), new Map([["a", "1.1.1.1:80"], ["c", "3.3.3.3:80"], ["d", "4.4.4.4:80"]]));
    assert.deepEqual(plan, { add: [["b", "2.2.2.2:80"], ["c", "3.3.3.3:81"]], remove: ["c", "d"] });
    assert.deepEqual(planServers(new Map([["a", "1.1.1.1:80"]]), new Map([["a", "1.1.1.1:80"]])), { add: [], remove: [] });
  });

  it("reads the web nodes of the fleet record, and the web node-ups and node-downs of events", () => {
    const facts = fleetFacts({
      writtenAt: "2026-01-01T00:00:00.000Z",
      nodes: [
        { id: "web-1", roles: ["web"], status: "up", report: { web: { address: { host: "10.0.0.1", port: 80 } } } },
        { id: "web-2", roles: ["web"], status: "lost" },
        { id: "db-1", roles: ["db"], status: "up" },
      ],
    });
    assert.deepEqual(facts.map((f) => `${f.node}:${f.up}:${f.address?.host ?? "-"}`), ["web-1:true:10.0.0.1", "web-2:false:-"]);
    const up = factOf("node-up", "2026-01-01T00:00:01.000Z", { node: { id: "web-3", roles: ["web"] }, report: { web: { releases: {}, address: { host: "10.0.0.3", port: 80 } } } });
    assert.deepEqual(up, { node: "web-3", up: true, address: { host: "10.0.0.3", port: 80 }, at: Date.parse("2026-01-01T00:00:01.000Z"), source: "event" });
    assert.equal(factOf("node-up", "2026-01-01T00:00:01.000Z", { node: { id: "db-1", roles: ["db"] }, report: {} }), undefined, "not a web node");
    assert.equal(factOf("node-down", "2026-01-01T00:00:01.000Z", { node: { id: "web-3", roles: ["web"] }, reason: "lost" })?.up, false);
  });
});

describe("HAProxy's config and runtime commands", () => {
  const settings = balancerSchema.parse({ listen: { host: "127.0.0.1", port: 8080 }, check: { path: "/health", interMs: 500, fall: 2, rise: 3 } });

  it("the config holds each server with its checks and an operator's state, and reads back the same", () => {
    const servers = [
      { name: "web-1", address: "10.0.0.1:80", state: "ready" as const },
      { name: "web-2", address: "10.0.0.2:80", state: "drain" as const },
      { name: "web-3", address: "[::1]:80", state: "maint" as const },
    ];
    const config = renderConfig(settings, "/var/lib/bosun/haproxy", servers);
    assert.match(config, /^ {2}stats socket \/var\/lib\/bosun\/haproxy\/admin\.sock mode 600 level admin$/m);
    assert.match(config, /^ {2}server-state-file \/var\/lib\/bosun\/haproxy\/server-state$/m);
    assert.match(config, /^ {2}load-server-state-from-file global$/m);
    assert.match(config, /^ {2}bind 127\.0\.0\.1:8080$/m);
    assert.match(config, /^ {2}option httpchk GET \/health$/m);
    assert.match(config, /^ {2}server web-1 10\.0\.0\.1:80 check inter 500 fall 2 rise 3$/m);
    assert.deepEqual(parseServerLines(config), servers);
  });

  it("a runtime command is made of checked words: nothing from a node record can add a command", () => {
    assert.equal(runtimeCommand("add", "server", "web/web-1", "10.0.0.1:80"), "add server web/web-1 10.0.0.1:80");
    for (const bad of ["web/x;shutdown sessions", "x\nshow info", "a b", ""]) assert.throws(() => runtimeCommand("del", "server", bad), /refusing to send/);
  });

  it("HAProxy's status text as a health verdict", () => {
    assert.deepEqual(["UP", "UP 1/2", "DRAIN", "DOWN", "DOWN 1/2", "MAINT", "no check", ""].map(healthOf), ["up", "up", "up", "down", "down", "unchecked", "unchecked", "unchecked"]);
  });

  it("a bad balancer setting names the setting and the value", () => {
    assert.throws(() => loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ networks: ["10.0.0.0"] }) }, cwd: "/nonexistent" }), /Invalid BOSUN_BALANCER: expected a network such as 10\.0\.0\.0\/16, received/);
    assert.throws(() => loadSettings({ env: { BOSUN_WEB: JSON.stringify({ advertise: { host: "a b", port: 80 } }) }, cwd: "/nonexistent" }), /Invalid BOSUN_WEB: expected an IP address or a host name/);
  });

  it("a bad pair setting names the setting and the value", () => {
    const pair = { peer: "http://10.0.1.6/.bosun-lb", entry: { kind: "eip", allocationId: "eipalloc-0abc" } };
    const parsed = loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair }) }, cwd: "/nonexistent" }).balancer?.pair;
    assert.deepEqual({ intervalMs: parsed?.intervalMs, failures: parsed?.failures, failback: parsed?.failback }, { intervalMs: 2000, failures: 3, failback: false });
    assert.throws(() => loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair: { ...pair, peer: "10.0.1.6" } }) }, cwd: "/nonexistent" }), /Invalid BOSUN_BALANCER: expected the other balancer's check URL, such as http:\/\/10\.0\.1\.6\/\.bosun-lb, received ".*10\.0\.1\.6/);
    assert.throws(() => loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair: { ...pair, entry: { kind: "eip", allocationId: "1.2.3.4" } } }) }, cwd: "/nonexistent" }), /Invalid BOSUN_BALANCER: expected an Elastic IP allocation id such as eipalloc-0123abcd, received/);
    assert.throws(() => loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair: { ...pair, failures: 0 } }) }, cwd: "/nonexistent" }), /Invalid BOSUN_BALANCER: .*>=1.*received/);
    const dns = { kind: "route53", hostedZoneId: "Z0123456789ABC", name: "www.example.com", address: "203.0.113.10" };
    assert.equal(loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair: { ...pair, entry: dns } }) }, cwd: "/nonexistent" }).balancer?.pair?.entry.kind, "route53");
    assert.throws(() => loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair: { ...pair, entry: { ...dns, address: "www" } } }) }, cwd: "/nonexistent" }), /Invalid BOSUN_BALANCER: expected this balancer's public IPv4 address, received/);
    assert.throws(() => loadSettings({ env: { BOSUN_BALANCER: JSON.stringify({ pair: { ...pair, entry: { ...dns, hostedZoneId: "/hostedzone/x" } } }) }, cwd: "/nonexistent" }), /Invalid BOSUN_BALANCER: expected a Route 53 hosted zone id/);
  });

  it("a bad target group setting names the setting and the value", () => {
    const arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
    assert.equal(loadSettings({ env: { BOSUN_TARGET_GROUP: JSON.stringify({ arn }) }, cwd: "/nonexistent" }).targetGroup?.runBy, "coordinator");
    assert.throws(() => loadSettings({ env: { BOSUN_TARGET_GROUP: JSON.stringify({ arn: "web" }) }, cwd: "/nonexistent" }), /Invalid BOSUN_TARGET_GROUP: expected a target group ARN \(arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup\/NAME\/ID\), received "\{\\"arn\\":\\"web\\"\}"/);
    assert.throws(() => loadSettings({ env: { BOSUN_TARGET_GROUP: JSON.stringify({ arn, runBy: "cron" }) }, cwd: "/nonexistent" }), /Invalid BOSUN_TARGET_GROUP: .*"coordinator".*received ".*cron.*"/);
    assert.throws(() => loadSettings({ env: { BOSUN_TARGET_GROUP: JSON.stringify({ arn, networks: ["10.0.0.0"] }) }, cwd: "/nonexistent" }), /Invalid BOSUN_TARGET_GROUP: expected a network such as 10\.0\.0\.0\/16/);
  });
});
