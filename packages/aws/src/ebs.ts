import type { AwsClients } from "./clients.ts";

/** An EBS snapshot as EC2 reports it. */
export interface VolumeSnapshot {
  snapshotId: string;
  state: "pending" | "completed" | "error" | "recoverable" | "recovering" | "unknown";
  progress?: string;
  message?: string;
}

/** Starts an EBS snapshot of a volume, tagged; the EC2 client (large) is loaded on first use. */
export async function createVolumeSnapshot(
  clients: AwsClients,
  options: { volumeId: string; description: string; tags: Record<string, string>; signal?: AbortSignal },
): Promise<string | undefined> {
  const { CreateSnapshotCommand } = await import("@aws-sdk/client-ec2");
  const out = await (await clients.ec2()).send(
    new CreateSnapshotCommand({
      VolumeId: options.volumeId,
      Description: options.description,
      TagSpecifications: [{ ResourceType: "snapshot", Tags: Object.entries(options.tags).map(([Key, Value]) => ({ Key, Value })) }],
    }),
    options.signal ? { abortSignal: options.signal } : {},
  );
  return out.SnapshotId;
}

export async function describeVolumeSnapshot(clients: AwsClients, snapshotId: string, signal?: AbortSignal): Promise<VolumeSnapshot> {
  const { DescribeSnapshotsCommand } = await import("@aws-sdk/client-ec2");
  const out = await (await clients.ec2()).send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }), signal ? { abortSignal: signal } : {});
  const found = out.Snapshots?.[0];
  return {
    snapshotId,
    state: (found?.State as VolumeSnapshot["state"] | undefined) ?? "unknown",
    ...(found?.Progress ? { progress: found.Progress } : {}),
    ...(found?.StateMessage ? { message: found.StateMessage } : {}),
  };
}

/** Deletes an EBS snapshot; one already gone counts as deleted. */
export async function deleteVolumeSnapshot(clients: AwsClients, snapshotId: string): Promise<void> {
  const { DeleteSnapshotCommand } = await import("@aws-sdk/client-ec2");
  try {
    await (await clients.ec2()).send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }));
  } catch (error) {
    if ((error as { name?: string }).name !== "InvalidSnapshot.NotFound") throw error;
  }
}
