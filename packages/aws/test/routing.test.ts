import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { routingAttributes, nodeFilterPolicy, unroutable } from "@bosun/aws";
import { parseTarget, type UnsignedEnvelope } from "@bosun/core";

const envelope = (target: UnsignedEnvelope["target"]): UnsignedEnvelope => ({
  v: 1,
  id: "00000000-0000-4000-8000-000000000000",
  kind: "command",
  type: "probe",
  issuedAt: new Date().toISOString(),
  expiresAt: new Date().toISOString(),
  issuer: "oncall",
  ...(target ? { target } : {}),
  correlationId: "c",
  payload: {},
});

describe("routing through SNS", () => {
  it("routes with one message attribute per target", () => {
    const attributes = routingAttributes(envelope(parseTarget("role:web,node:db-1")));
    assert.equal(attributes["to.role.web"], "1");
    assert.equal(attributes["to.node.db-1"], "1");
    assert.equal(attributes["to.all"], undefined);
    assert.equal(attributes["kind"], "command");
  });

  it("a node's filter policy matches exactly all, its roles and its id", () => {
    assert.deepEqual(nodeFilterPolicy("web-1", ["web"]), {
      $or: [{ "to.all": [{ exists: true }] }, { "to.role.web": [{ exists: true }] }, { "to.node.web-1": [{ exists: true }] }],
    });
  });

  it("names at most eight roles and nodes together, because SNS filters on ten attributes", () => {
    const nodes = Array.from({ length: 9 }, (_, i) => `web-${i}`);
    assert.equal(unroutable({ nodes: nodes.slice(0, 8) }), undefined);
    assert.match(unroutable({ nodes }) ?? "", /at most 8 roles and nodes together .* this one names 9/);
  });
});
