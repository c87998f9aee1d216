import { after, before, describe, it } from "node:test";
import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { PassThrough, Readable, pipeline } from "node:stream";
import { CreateBucketCommand } from "@aws-sdk/client-s3";
import { createAwsClients, destroyAwsClients, downloadStream, pendingUploads, uploadStream, type AwsClients } from "@bosun/aws";
import { S3Proxy } from "../../../test/helpers/s3-proxy.ts";
import { Moto, motoMissing } from "../../../test/helpers/moto.ts";

/** On moto's S3: it lists multipart uploads left open (the SQS/SNS/S3 emulator lists none), so "no parts left behind" is seen. */
describe("streaming objects to and from S3", { skip: motoMissing() ?? false }, () => {
  let moto: Moto;
  let clients: AwsClients;
  const bucket = "objects-test";
  before(async () => {
    moto = await Moto.start();
    clients = createAwsClients({ endpoint: moto.endpoint, region: "us-east-1" });
    await clients.s3.send(new CreateBucketCommand({ Bucket: bucket }));
  });
  after(async () => {
    if (clients) destroyAwsClients(clients);
    await moto?.stop();
  });

  it("uploads a stream in many parts and reads back the same bytes", async () => {
    const data = randomBytes(13 * 1024 * 1024 + 5);
    let progress = 0;
    const out = await uploadStream(clients, { bucket, key: "big.bin", body: Readable.from([data]), partMB: 5, onProgress: (b) => (progress = b) });
    assert.equal(out.bytes, data.length);
    assert.equal(progress, data.length);
    const back = await downloadStream(clients, { bucket, key: "big.bin" });
    const chunks: Buffer[] = [];
    for await (const chunk of back!.body) chunks.push(chunk as Buffer);
    assert.equal(createHash("sha256").update(Buffer.concat(chunks)).digest("hex"), createHash("sha256").update(data).digest("hex"));
  });

  it("a body that fails mid-upload aborts the upload: no object, no parts left behind", async () => {
    const failing = new Readable({
      read() {
        this.push(randomBytes(6 * 1024 * 1024));
        if ((this as unknown as { n?: number }).n === undefined) (this as unknown as { n: number }).n = 0;
        if (++(this as unknown as { n: number }).n === 3) this.destroy(new Error("the database went away"));
      },
    });
    await assert.rejects(uploadStream(clients, { bucket, key: "broken.bin", body: failing, partMB: 5 }), /the database went away/);
    assert.equal(await downloadStream(clients, { bucket, key: "broken.bin" }), undefined);
    assert.deepEqual(await pendingUploads(clients, bucket, "broken"), []);
  });

  it("a part that S3 keeps failing stops the whole upload at once, names S3's error, and aborts the multipart upload", async () => {
    const proxy = await S3Proxy.start(moto.endpoint);
    const viaProxy = createAwsClients({ endpoint: proxy.endpoint, region: "us-east-1" });
    try {
      proxy.rule = (req) => (req.method === "PUT" && /[?&]partNumber=2(&|$)/.test(req.url) ? "fail" : "pass");
      // A body longer than the parts in flight: lib-storage alone would wait on it after part 2 failed.
      // As a backup's body is: a tool's output, piped on through transforms.
      const tool = spawn("head", ["-c", String(60 * 1024 * 1024), "/dev/urandom"], { stdio: ["ignore", "pipe", "ignore"] });
      const body = pipeline(tool.stdout.pipe(new PassThrough()), new PassThrough(), () => undefined);
      await assert.rejects(uploadStream(viaProxy, { bucket, key: "failing-part.bin", body, partMB: 5, queueSize: 2 }), /failing-part\.bin failed: We encountered an internal error/);
      tool.kill();
      assert.deepEqual(await pendingUploads(clients, bucket, "failing-part"), []);
      assert.equal(await downloadStream(clients, { bucket, key: "failing-part.bin" }), undefined);
    } finally {
      destroyAwsClients(viaProxy);
      await proxy.close();
    }
  });
});
