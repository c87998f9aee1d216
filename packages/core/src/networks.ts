import { BlockList, isIP } from "node:net";

/**
 * Whether an address lies in one of the networks (CIDR); an empty list allows any address, and
 * a host name (not an IP address) is never in a network. Balancers and target groups both check
 * web nodes' advertised addresses with it.
 */
export function inNetworks(host: string, networks: readonly string[]): boolean {
  if (networks.length === 0) return true;
  const allowed = new BlockList();
  for (const network of networks) {
    const [base, bits] = network.split("/");
    allowed.addSubnet(base!, Number(bits), isIP(base!) === 6 ? "ipv6" : "ipv4");
  }
  const family = isIP(host);
  return family !== 0 && allowed.check(host, family === 6 ? "ipv6" : "ipv4");
}
