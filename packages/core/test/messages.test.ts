import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import {
  TrustStore,
  createMessage,
  generateSigningKey,
  parseMessage,
  parseTarget,
  privateKeyFromPem,
  targetsNode,
  type ParseContext,
  type Signer,
} from "@bosun/core";

const admin = generateSigningKey();
const ci = generateSigningKey();
const trust = TrustStore.fromJson({
  keys: {
    admin: { publicKey: admin.publicKey, allow: ["*"] },
    ci: { publicKey: ci.publicKey, allow: ["release"] },
  },
});
const signer = (id: string, key = admin): Signer => ({ keyId: id, privateKey: privateKeyFromPem(key.privateKeyPem) });
const ctx: ParseContext = {
  trust,
  now: new Date(),
  maxBytes: 4096,
  schemaFor: (kind, type) => (kind === "command" && type === "probe" ? z.object({ seconds: z.number() }) : undefined),
};
const probe = (options: { key?: Signer; payload?: unknown; ttlSeconds?: number; now?: Date; type?: string } = {}) =>
  createMessage(options.key ?? signer("admin"), {
    kind: "command",
    type: options.type ?? "probe",
    payload: options.payload ?? { seconds: 1 },
    target: { roles: ["web"] },
    ttlSeconds: options.ttlSeconds ?? 60,
    ...(options.now ? { now: options.now } : {}),
  });
const reason = (raw: string) => {
  const result = parseMessage(raw, ctx);
  return result.ok ? "ok" : result.error.reason;
};

describe("parsing and checking a message", () => {
  it("accepts a signed, allowed, current command and returns its parsed payload", () => {
    const result = parseMessage(JSON.stringify(probe()), ctx);
    assert.ok(result.ok);
    assert.deepEqual(result.value.payload, { seconds: 1 });
  });

  it("refuses each kind of bad input with its own reason", () => {
    const good = probe();
    const { sig: _sig, ...unsigned } = good;
    assert.equal(reason("x".repeat(5000)), "oversized");
    assert.equal(reason("{nope"), "malformed-json");
    assert.equal(reason(JSON.stringify(unsigned)), "unsigned");
    assert.equal(reason(JSON.stringify({ ...good, v: 2 })), "bad-envelope");
    assert.equal(reason(JSON.stringify(probe({ key: signer("stranger", generateSigningKey()) }))), "unknown-key");
    assert.equal(reason(JSON.stringify({ ...good, payload: { seconds: 2 } })), "bad-signature");
    assert.equal(reason(JSON.stringify({ ...good, target: { all: true } })), "bad-signature");
    assert.equal(reason(JSON.stringify(probe({ key: signer("ci", ci) }))), "not-allowed");
    assert.equal(reason(JSON.stringify(probe({ now: new Date(Date.now() - 600_000), ttlSeconds: 60 }))), "expired");
    assert.equal(reason(JSON.stringify(probe({ now: new Date(Date.now() + 600_000) }))), "not-yet-valid");
    assert.equal(reason(JSON.stringify(probe({ ttlSeconds: 3 * 86400 }))), "bad-envelope");
    assert.equal(reason(JSON.stringify(probe({ type: "reboot" }))), "unknown-type");
    assert.equal(reason(JSON.stringify(probe({ payload: { seconds: "1" } }))), "bad-payload");
  });

  it("a key signing as another key id is refused", () => {
    const forged = createMessage({ keyId: "admin", privateKey: privateKeyFromPem(ci.privateKeyPem) }, {
      kind: "command",
      type: "probe",
      payload: { seconds: 1 },
      target: { all: true },
      ttlSeconds: 60,
    });
    assert.equal(reason(JSON.stringify(forged)), "bad-signature");
  });

  it("allows events only to keys with event rights", () => {
    assert.equal(trust.allows("admin", "event", "done"), false);
    assert.equal(TrustStore.fromJson({ keys: { fleet: { publicKey: admin.publicKey, allow: ["event:*"] } } }).allows("fleet", "event", "done"), true);
    assert.equal(trust.allows("ci", "command", "release"), true);
    assert.equal(trust.allows("ci", "command", "restore"), false);
  });

  it("rejects a malformed trust file with the path of the problem", () => {
    assert.throws(() => TrustStore.fromJson({ keys: { ci: { publicKey: "AAAA", allow: ["*"] } } }), /Invalid public key for "ci"/);
    assert.throws(() => TrustStore.fromJson({ keys: { ci: { allow: ["*"] } } }), /keys\.ci\.publicKey/);
  });
});

describe("targets", () => {
  it("parses targets", () => {
    assert.deepEqual(parseTarget("role:web,node:db-1"), { roles: ["web"], nodes: ["db-1"] });
    assert.throws(() => parseTarget(""), /a command needs a target/);
    assert.throws(() => parseTarget("role:bad role"), /expected 1-64 letters/);
  });

  it("a target names its nodes by all, role or id", () => {
    assert.equal(targetsNode({ roles: ["web"] }, "web-1", ["web"]), true);
    assert.equal(targetsNode({ roles: ["db"] }, "web-1", ["web"]), false);
    assert.equal(targetsNode({ nodes: ["web-1"] }, "web-1", []), true);
    assert.equal(targetsNode({ all: true }, "x", []), true);
  });
});
