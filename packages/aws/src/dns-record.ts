import { recorded } from "./clients.ts";
import type { Route53Client } from "@aws-sdk/client-route-53";

/** A lazily made Route 53 client (SDK standard configuration; AWS_ENDPOINT_URL_ROUTE_53 points it elsewhere). */
export type Route53Provider = () => Promise<Route53Client>;

export function route53Provider(): Route53Provider {
  let client: Promise<Route53Client> | undefined;
  return () => (client ??= import("@aws-sdk/client-route-53").then((sdk) => recorded("route53", new sdk.Route53Client({}))));
}

/** Points an A record at one address (UPSERT), with the TTL resolvers may cache it for. */
export async function upsertARecord(route53: Route53Provider, options: { hostedZoneId: string; name: string; address: string; ttlSeconds: number; comment: string }): Promise<void> {
  const { ChangeResourceRecordSetsCommand } = await import("@aws-sdk/client-route-53");
  await (await route53()).send(
    new ChangeResourceRecordSetsCommand({
      HostedZoneId: options.hostedZoneId,
      ChangeBatch: {
        Comment: options.comment,
        Changes: [{ Action: "UPSERT", ResourceRecordSet: { Name: options.name, Type: "A", TTL: options.ttlSeconds, ResourceRecords: [{ Value: options.address }] } }],
      },
    }),
  );
}

/** The addresses an A record holds now, as Route 53's API answers (not what resolvers have cached). */
export async function readARecord(route53: Route53Provider, options: { hostedZoneId: string; name: string }): Promise<string[]> {
  const { ListResourceRecordSetsCommand } = await import("@aws-sdk/client-route-53");
  const wanted = options.name.endsWith(".") ? options.name : `${options.name}.`;
  const out = await (await route53()).send(new ListResourceRecordSetsCommand({ HostedZoneId: options.hostedZoneId, StartRecordName: wanted, StartRecordType: "A", MaxItems: 1 }));
  const set = out.ResourceRecordSets?.find((r) => r.Name === wanted && r.Type === "A");
  return (set?.ResourceRecords ?? []).map((r) => r.Value ?? "");
}
