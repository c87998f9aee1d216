import type { AwsClients } from "./clients.ts";

/** Where an Elastic IP points now. */
export interface ElasticIpAssociation {
  allocationId: string;
  publicIp: string;
  /** The instance it is associated with, if any. */
  instanceId?: string;
  /** This association's id: a takeover names it, so it undoes exactly the association it saw. */
  associationId?: string;
}

/** The Elastic IP's current association (DescribeAddresses). */
export async function describeElasticIp(clients: AwsClients, allocationId: string, signal?: AbortSignal): Promise<ElasticIpAssociation> {
  const { DescribeAddressesCommand } = await import("@aws-sdk/client-ec2");
  const out = await (await clients.ec2()).send(new DescribeAddressesCommand({ AllocationIds: [allocationId] }), signal ? { abortSignal: signal } : {});
  const address = out.Addresses?.[0];
  return {
    allocationId,
    publicIp: address?.PublicIp ?? "",
    ...(address?.InstanceId ? { instanceId: address.InstanceId } : {}),
    ...(address?.AssociationId ? { associationId: address.AssociationId } : {}),
  };
}

/**
 * Associates the Elastic IP with an instance, as a compare-and-swap on the address's own
 * association state: `from` (the association the caller saw, its holder's) is removed by its id,
 * which EC2 refuses (InvalidAssociationID.NotFound) once anyone has moved the address since; the
 * new association is made with AllowReassociation=false, which EC2 refuses
 * (Resource.AlreadyAssociated) once anyone else holds it. So of two claimants at most one wins,
 * and the loser learns it. True when this instance holds the address now.
 */
export async function claimElasticIp(clients: AwsClients, options: { allocationId: string; instanceId: string; from?: string | undefined; signal?: AbortSignal }): Promise<boolean> {
  const { AssociateAddressCommand, DisassociateAddressCommand } = await import("@aws-sdk/client-ec2");
  const ec2 = await clients.ec2();
  const send = options.signal ? { abortSignal: options.signal } : {};
  try {
    if (options.from) await ec2.send(new DisassociateAddressCommand({ AssociationId: options.from }), send);
    await ec2.send(new AssociateAddressCommand({ AllocationId: options.allocationId, InstanceId: options.instanceId, AllowReassociation: false }), send);
    return true;
  } catch (error) {
    const name = (error as { name?: string }).name;
    if (name === "InvalidAssociationID.NotFound" || name === "Resource.AlreadyAssociated") return false;
    throw error;
  }
}

/** Removes the Elastic IP's association if `instanceId` holds it (by the association's own id, so never another holder's). True when it did. */
export async function releaseElasticIp(clients: AwsClients, options: { allocationId: string; instanceId: string }): Promise<boolean> {
  const address = await describeElasticIp(clients, options.allocationId);
  if (address.instanceId !== options.instanceId || !address.associationId) return false;
  const { DisassociateAddressCommand } = await import("@aws-sdk/client-ec2");
  try {
    await (await clients.ec2()).send(new DisassociateAddressCommand({ AssociationId: address.associationId }));
    return true;
  } catch (error) {
    if ((error as { name?: string }).name === "InvalidAssociationID.NotFound") return false;
    throw error;
  }
}
