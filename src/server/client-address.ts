/**
 * Who a request comes from, by address: `--allowed-client-cidrs` (the networks that may call)
 * and `--trusted-proxies` (whose X-Forwarded-For or Forwarded header is believed).
 *
 * A connection from outside the allowlist is closed as it is accepted, before a byte is read:
 * both ports' listeners get `refusedPeers`, the allowlist's complement as a net.BlockList, which
 * Node checks on the raw handle before it makes a socket of it. A trusted proxy's connections
 * are accepted; each request it forwards is then judged by the address it forwarded for
 * (`clientOf`, which the ports call before anything else of the request).
 *
 * The forwarded chain is read from the right: the last entry is what the trusted peer saw, and
 * while that address is a trusted proxy too, the entry before it is believed, and so on. The
 * first untrusted address is the client; entries left of it were written by whoever the client
 * was, so a forged header changes nothing. A peer that is not a trusted proxy has its headers
 * ignored. Addresses are IPv4 and IPv6; an IPv4-mapped IPv6 address (::ffff:10.1.2.3, as a
 * dual-stack listener reports IPv4 peers) is the IPv4 address it maps, in ranges and in names.
 */
import net from "node:net";
import ipaddr from "ipaddr.js";
import { GlanceError } from "../errors.ts";

/** What `clientOf` reads of a request's headers (a fetch Headers has it). */
export interface HeaderSource {
  get(name: string): string | null | undefined;
}

export interface ClientAddresses {
  /** Every address outside the allowlist and the trusted proxies, for net.Server's blockList; unset without an allowlist. */
  readonly refusedPeers?: net.BlockList;
  /**
   * The address of the client of a request that came from `peer` with `headers`: the peer's,
   * or past trusted proxies the one they forwarded for, IPv4-mapped addresses unmapped. Throws
   * permission_denied when it is outside the allowlist.
   */
  clientOf(peer: string, headers: HeaderSource): string;
}

/** A range of addresses as 128-bit numbers, IPv4 as its IPv4-mapped IPv6 address. */
type Range = [bigint, bigint];

const MAPPED_START = 0xffffn << 32n;
const MAPPED_END = MAPPED_START + 0xffff_ffffn;
const LAST = (1n << 128n) - 1n;
/** The most forwarded entries read, from the right: more hops than any real chain of proxies. */
const MAX_HOPS = 32;

const toBigInt = (bytes: number[]) => bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);

function toBytes(n: bigint, length: number): number[] {
  return Array.from({ length }, (_, i) => Number((n >> BigInt(8 * (length - 1 - i))) & 0xffn));
}

/** An address in 128-bit space: IPv4 mapped. */
function toMapped(address: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv6 {
  return address.kind() === "ipv4" ? (address as ipaddr.IPv4).toIPv4MappedAddress() : (address as ipaddr.IPv6);
}

/**
 * A CIDR list's ranges: "10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.0/104", or a bare address
 * (one host). Throws naming the flag and the entry that is not one.
 */
export function parseCidrs(entries: string[], flag: string): Range[] {
  return entries.map((entry) => {
    const [address, prefix] = entry.includes("/") ? entry.split("/", 2) : [entry, undefined];
    if (!address || net.isIP(address) === 0 || (prefix !== undefined && !/^\d{1,3}$/.test(prefix))) {
      throw new Error(`${flag}: ${entry} is not an address range like 10.0.0.0/8 or 2001:db8::/32`);
    }
    const parsed = ipaddr.parse(address);
    const bits = parsed.kind() === "ipv4" ? 32 : 128;
    const length = prefix === undefined ? bits : Number(prefix);
    if (length > bits) throw new Error(`${flag}: ${entry} has a prefix longer than ${bits} bits`);
    const prefixIn128 = length + (128 - bits);
    const start = toBigInt(toMapped(parsed).toByteArray());
    const hostBits = BigInt(128 - prefixIn128);
    const first = (start >> hostBits) << hostBits;
    return [first, first | ((1n << hostBits) - 1n)];
  });
}

/** The ranges' complement over all of IPv6 (IPv4 within it, mapped). */
function complement(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: Range[] = [];
  let next = 0n;
  for (const [start, end] of sorted) {
    if (start > next) out.push([next, start - 1n]);
    if (end + 1n > next) next = end + 1n;
  }
  if (next <= LAST) out.push([next, LAST]);
  return out;
}

/**
 * The ranges as a BlockList. A range inside the IPv4-mapped block goes in as IPv4, so that it
 * matches both an IPv4 peer and its mapped form (BlockList maps a single subnet or range both
 * ways, but not a range that only partly lies in the mapped block); the rest goes in as IPv6.
 */
function blockListOf(ranges: Range[]): net.BlockList {
  const list = new net.BlockList();
  const v4 = (n: bigint) => ipaddr.fromByteArray(toBytes(n - MAPPED_START, 4)).toString();
  const v6 = (n: bigint) => ipaddr.fromByteArray(toBytes(n, 16)).toString();
  for (const [start, end] of ranges) {
    const pieces: Array<[bigint, bigint, "ipv4" | "ipv6"]> = [
      [start, end < MAPPED_START ? end : MAPPED_START - 1n, "ipv6"],
      [start > MAPPED_START ? start : MAPPED_START, end < MAPPED_END ? end : MAPPED_END, "ipv4"],
      [start > MAPPED_END ? start : MAPPED_END + 1n, end, "ipv6"],
    ];
    for (const [from, to, kind] of pieces) {
      if (from > to) continue;
      if (kind === "ipv4") list.addRange(v4(from), v4(to), "ipv4");
      else list.addRange(v6(from), v6(to), "ipv6");
    }
  }
  return list;
}

/**
 * An address as the logs and the rate limits name it: IPv4-mapped IPv6 unmapped, IPv6 in its
 * short form; undefined when `text` is not an address. Takes a forwarded entry's forms too:
 * brackets, a port ("192.0.2.1:4711", "[2001:db8::1]:4711") and a zone are dropped.
 */
export function normalizeAddress(text: string): string | undefined {
  let s = text.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracketed) s = bracketed[1]!;
  else if (/^[\d.]+:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(":"));
  s = s.replace(/%.*$/, "");
  if (!ipaddr.isValid(s) || net.isIP(s) === 0) return undefined;
  const parsed = ipaddr.parse(s);
  if (parsed.kind() === "ipv6" && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) return (parsed as ipaddr.IPv6).toIPv4Address().toString();
  return parsed.toString();
}

/** The `for=` values of a Forwarded header (RFC 7239), left to right, quotes removed. */
function forwardedFor(header: string): string[] {
  const out: string[] = [];
  for (const element of header.split(",")) {
    const pair = element.split(";").find((p) => /^\s*for\s*=/i.test(p));
    out.push(
      pair === undefined
        ? ""
        : pair
            .slice(pair.indexOf("=") + 1)
            .trim()
            .replace(/^"(.*)"$/, "$1"),
    );
  }
  return out;
}

/**
 * The forwarded chain, left to right: X-Forwarded-For's entries when the request has one, else
 * Forwarded's `for=` values. A proxy that writes Forwarded must not pass on a client's
 * X-Forwarded-For (nginx, as the README configures it, writes X-Forwarded-For).
 */
function forwardedChain(headers: HeaderSource): string[] {
  const xff = headers.get("x-forwarded-for");
  if (xff) return xff.split(",");
  const forwarded = headers.get("forwarded");
  return forwarded ? forwardedFor(forwarded) : [];
}

export function createClientAddresses(options: { allowedCidrs: string[]; trustedProxies: string[] }): ClientAddresses {
  const allowedRanges = parseCidrs(options.allowedCidrs, "--allowed-client-cidrs");
  const trustedRanges = parseCidrs(options.trustedProxies, "--trusted-proxies");
  const allowed = allowedRanges.length > 0 ? blockListOf(allowedRanges) : undefined;
  const trusted = trustedRanges.length > 0 ? blockListOf(trustedRanges) : undefined;
  const check = (list: net.BlockList, address: string) => list.check(address, net.isIPv6(address) ? "ipv6" : "ipv4");
  return {
    refusedPeers: allowed && blockListOf(complement([...allowedRanges, ...trustedRanges])),
    clientOf(peer, headers) {
      let client = normalizeAddress(peer);
      if (client !== undefined && trusted && check(trusted, client)) {
        const chain = forwardedChain(headers).slice(-MAX_HOPS);
        for (let i = chain.length - 1; i >= 0 && check(trusted, client); i--) {
          // An entry that is no address ("unknown", an obfuscated name) ends the walk: the client is then the proxy that wrote it.
          const hop = normalizeAddress(chain[i]!);
          if (hop === undefined) break;
          client = hop;
        }
      }
      if (allowed && (client === undefined || !check(allowed, client))) {
        throw new GlanceError(
          "permission_denied",
          `the client address ${client ?? "(unknown)"} is not in this server's allowed networks (--allowed-client-cidrs)`,
        );
      }
      return client ?? peer;
    },
  };
}
