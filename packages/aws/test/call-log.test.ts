import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { createAwsClients, destroyAwsClients, type RecordedCall } from "@bosun/aws";

/** The opt-in recorder of AWS calls (BOSUN_AWS_CALL_LOG), against a server that answers 200 to a PUT and 404 to the rest. */
describe("the AWS call log", () => {
  let server: Server;
  let endpoint: string;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "bosun-call-log-"));
    server = createServer((req, res) => {
      req.resume();
      res.statusCode = req.method === "PUT" ? 200 : 404;
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const withLog = async <T>(path: string | undefined, run: () => Promise<T>): Promise<T> => {
    const before = process.env["BOSUN_AWS_CALL_LOG"];
    if (path === undefined) delete process.env["BOSUN_AWS_CALL_LOG"];
    else process.env["BOSUN_AWS_CALL_LOG"] = path;
    try {
      return await run();
    } finally {
      if (before === undefined) delete process.env["BOSUN_AWS_CALL_LOG"];
      else process.env["BOSUN_AWS_CALL_LOG"] = before;
    }
  };

  it("appends one line per call, failed ones with the error's name, and no bodies", async () => {
    const path = join(dir, "calls.jsonl");
    await withLog(path, async () => {
      const clients = createAwsClients({ endpoint, region: "eu-west-1" });
      try {
        await clients.s3.send(new PutObjectCommand({ Bucket: "b", Key: "state/x.json", Body: "secret body" }));
        await assert.rejects(clients.s3.send(new GetObjectCommand({ Bucket: "b", Key: "state/missing.json" })));
      } finally {
        destroyAwsClients(clients);
      }
    });
    const text = await readFile(path, "utf8");
    const calls = text.trim().split("\n").map((l) => JSON.parse(l) as RecordedCall);
    assert.deepEqual(
      calls.map(({ service, operation, params, error }) => ({ service, operation, params, error })),
      [
        { service: "s3", operation: "PutObject", params: { Bucket: "b", Key: "state/x.json" }, error: undefined },
        { service: "s3", operation: "GetObject", params: { Bucket: "b", Key: "state/missing.json" }, error: calls[1]!.error },
      ],
    );
    assert.ok(calls[1]!.error, "the failed call names its error");
    assert.ok(!text.includes("secret body"), "bodies stay out of the log");
  });

  it("adds nothing to the clients when the variable is unset", async () => {
    const clients = await withLog(undefined, async () => createAwsClients({ endpoint, region: "eu-west-1" }));
    try {
      for (const client of [clients.s3, clients.sqs, clients.sns]) assert.ok(!client.middlewareStack.identify().some((m) => m.includes("bosunCallLog")));
    } finally {
      destroyAwsClients(clients);
    }
  });
});
