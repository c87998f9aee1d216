import { createServer, type IncomingMessage, type Server } from "node:http";
import { once } from "node:events";
import type { AddressInfo } from "node:net";

/**
 * Stand-ins for what cannot run here: the EC2 instance metadata service (IMDSv2: a PUT for a
 * session token, then GETs that must carry it) and the EC2 Query API's DescribeTags, answering
 * with the XML shape the SDK parses. Everything else in the tests is real.
 */
export class FakeEc2 {
  readonly requests: { path: string; method: string; tokenHeader?: string; body?: string }[] = [];
  #servers: Server[] = [];
  imdsEndpoint = "";
  ec2Endpoint = "";

  readonly instanceId: string;
  readonly tags: Record<string, string>;

  constructor(instanceId: string, tags: Record<string, string>) {
    this.instanceId = instanceId;
    this.tags = tags;
  }

  async start(): Promise<void> {
    const token = "bosun-test-token";
    const imds = createServer((req, res) => {
      // The SDK joins the endpoint's "/" and the path, so paths arrive as "//latest/..."; IMDS accepts both.
      req.url = (req.url ?? "").replace(/^\/+/, "/");
      const tokenHeader = req.headers["x-aws-ec2-metadata-token"] as string | undefined;
      this.requests.push({ path: req.url ?? "", method: req.method ?? "", ...(tokenHeader ? { tokenHeader } : {}) });
      if (req.method === "PUT" && req.url === "/latest/api/token" && req.headers["x-aws-ec2-metadata-token-ttl-seconds"]) {
        res.end(token);
      } else if (req.method === "GET" && req.url === "/latest/meta-data/instance-id") {
        if (tokenHeader !== token) {
          res.statusCode = 401;
          res.end();
        } else res.end(this.instanceId);
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    const ec2 = createServer(async (req, res) => {
      const body = await read(req);
      this.requests.push({ path: req.url ?? "", method: req.method ?? "", body });
      const form = new URLSearchParams(body);
      if (form.get("Action") !== "DescribeTags") {
        res.statusCode = 400;
        res.end(`<Response><Errors><Error><Code>InvalidAction</Code><Message>not faked</Message></Error></Errors></Response>`);
        return;
      }
      const wanted = form.get("Filter.1.Value.1");
      const items = wanted === this.instanceId ? Object.entries(this.tags) : [];
      res.setHeader("content-type", "text/xml;charset=UTF-8");
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?>
<DescribeTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
  <tagSet>${items
    .map(([key, value]) => `<item><resourceId>${this.instanceId}</resourceId><resourceType>instance</resourceType><key>${key}</key><value>${value}</value></item>`)
    .join("")}</tagSet>
</DescribeTagsResponse>`,
      );
    });
    for (const server of [imds, ec2]) {
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      this.#servers.push(server);
    }
    this.imdsEndpoint = `http://127.0.0.1:${(imds.address() as AddressInfo).port}`;
    this.ec2Endpoint = `http://127.0.0.1:${(ec2.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await Promise.all(this.#servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

async function read(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
