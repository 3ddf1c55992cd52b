/**
 * `verify_and_map`: the user a verified client certificate is, by the
 * rules and in the order of nats-server 2.9 (server/auth.go,
 * checkClientTLSCertSubject):
 *
 *  1. each email address of subjectAltName, then each DNS name, then each
 *     URI, as a user name exactly;
 *  2. the subject as a distinguished name (RFC 4514 distinguishedNameMatch:
 *     RDN by RDN, attribute types in any case, values exactly) against
 *     every user name that reads as one; then the same allowing the RDNs in
 *     any order. Only when every attribute of the subject is one of CN,
 *     SERIALNUMBER, C, L, ST, STREET, O, OU, POSTALCODE, DC;
 *  3. the subject as Go writes it, followed by its domain components
 *     (`CN=x,O=y,DC=example,DC=com`), when it has any;
 *  4. the subject as Go writes it (`CN=x,OU=a+OU=b,O=y,C=z`), exactly.
 *
 * nats-server tries the reordered DNs in its map's random order; here the
 * users' order in the configuration decides, and two users with the same
 * DN are refused at start (options.ts), so the answer never depends on luck.
 */

import { certificateNames, goDomainComponents, goSubjectString, DerError, type SubjectAttribute } from "./x509-names.js";

/** One attribute of a DN: its type as written, and its value as UTF-8 bytes (in a latin1 string, so escapes of single bytes compare exactly). */
interface DnAttribute {
  type: string;
  value: string;
}
type Rdn = DnAttribute[];
export type Dn = Rdn[];

const bytes = (s: string): string => Buffer.from(s, "utf8").toString("latin1");

/** Characters a backslash may escape as themselves (otherwise it starts two hex digits). */
const ESCAPABLE = new Set(' "#+,;<=>\\');

/**
 * A user name read as a DN the way nats-server's LDAP parser reads it, or
 * null when it is not one (`alice`, `bob@example.com`). Spaces before a
 * type or value and unescaped spaces after one are dropped; `\` escapes a
 * special character or gives a byte in hex; a value starting with `#`
 * (BER) is refused.
 */
export function parseDn(name: string): Dn | null {
  const s = Buffer.from(name, "utf8");
  const dn: Dn = [];
  let rdn: Rdn = [];
  let type = "";
  let buf: number[] = [];
  let trailingSpaces = 0;
  let escaping = false;
  const take = (): string => {
    const v = Buffer.from(buf.slice(0, buf.length - trailingSpaces)).toString("latin1");
    buf = [];
    trailingSpaces = 0;
    return v;
  };
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    const ch = String.fromCharCode(c);
    if (escaping) {
      trailingSpaces = 0;
      escaping = false;
      if (ESCAPABLE.has(ch)) {
        buf.push(c);
        continue;
      }
      if (i + 1 === s.length) return null;
      const hex = s.toString("latin1", i, i + 2);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) return null;
      buf.push(parseInt(hex, 16));
      i++;
    } else if (ch === "\\") {
      trailingSpaces = 0;
      escaping = true;
    } else if (ch === "=") {
      type = take();
      if (s[i + 1] === 0x23) return null; // "#": a BER-encoded value
    } else if (ch === "," || ch === "+") {
      if (type === "") return null;
      rdn.push({ type, value: take() });
      type = "";
      if (ch === ",") {
        dn.push(rdn);
        rdn = [];
      }
    } else if (ch === " " && buf.length === 0) {
      continue;
    } else {
      trailingSpaces = ch === " " ? trailingSpaces + 1 : 0;
      buf.push(c);
    }
  }
  if (buf.length > 0) {
    if (type === "") return null;
    rdn.push({ type, value: take() });
    dn.push(rdn);
  }
  return dn;
}

/** The LDAP names of the attribute types nats-server's DN match knows; a subject with any other is not matched as a DN. */
const LDAP_TYPES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.5": "SERIALNUMBER",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "STREET",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.17": "POSTALCODE",
  "0.9.2342.19200300.100.1.25": "DC",
};

/** The subject as a DN, the most specific RDN first (as written: `CN=x,O=y`); null if an attribute is of another type or not a string. */
function subjectDn(subject: SubjectAttribute[][]): Dn | null {
  const dn: Dn = [];
  for (let i = subject.length - 1; i >= 0; i--) {
    if (subject[i].length === 0) continue;
    const rdn: Rdn = [];
    for (let j = subject[i].length - 1; j >= 0; j--) {
      const a = subject[i][j];
      const type = LDAP_TYPES[a.oid];
      if (type === undefined || a.value === null) return null;
      rdn.push({ type, value: bytes(a.value) });
    }
    dn.push(rdn);
  }
  return dn;
}

const sameAttribute = (a: DnAttribute, b: DnAttribute): boolean => a.value === b.value && a.type.toLowerCase() === b.type.toLowerCase();
const hasAll = (r: Rdn, of: Rdn): boolean => of.every((a) => r.some((b) => sameAttribute(a, b)));
const sameRdn = (a: Rdn, b: Rdn): boolean => a.length === b.length && hasAll(a, b) && hasAll(b, a);

/** RFC 4517's distinguishedNameMatch: the same RDNs in the same order. */
export function dnEqual(a: Dn, b: Dn): boolean {
  return a.length === b.length && a.every((r, i) => sameRdn(r, b[i]));
}

/** A key equal for two DNs exactly when dnEqual holds: per RDN, its size and its distinct attributes, sorted. */
export function dnKey(dn: Dn): string {
  return JSON.stringify(dn.map((r) => [r.length, [...new Set(r.map((a) => `${a.type.toLowerCase()}=${a.value}`))].sort()]));
}

/** The same RDNs in any order (nats-server's RDNsMatch: every RDN of `a` is one of `b`'s). */
export function dnSameRdns(a: Dn, b: Dn): boolean {
  return a.length === b.length && a.every((r) => b.some((o) => sameRdn(r, o)));
}

/** The user a certificate maps to, and which of its names did it (for the debug log). */
export interface CertificateMatch {
  user: string;
  how: string;
}

export class CertificateMap {
  /** Users whose names read as a DN, in configuration order. */
  private readonly dns: Array<{ user: string; dn: Dn }> = [];

  /** `users`: every user name a certificate may map to, in configuration order; `isUser` looks one up exactly. */
  constructor(
    users: readonly string[],
    private readonly isUser: (name: string) => boolean,
  ) {
    for (const user of users) {
      const dn = parseDn(user);
      // An empty DN would match a certificate with an empty subject: never what a user name means.
      if (dn !== null && dn.length > 0) this.dns.push({ user, dn });
    }
  }

  /** The user the certificate (DER) is, or null: it maps to nobody, or cannot be read. */
  match(der: Buffer): CertificateMatch | null {
    let names;
    try {
      names = certificateNames(der);
    } catch (err) {
      if (err instanceof DerError) return null;
      throw err;
    }
    // nats-server: with no email, no URI and an empty subject there is nothing to map (DNS names alone do not count).
    if (names.emails.length === 0 && names.uris.length === 0 && names.subject.every((r) => r.length === 0)) return null;
    for (const [list, how] of [
      [names.emails, "email"],
      [names.dnsNames, "DNS name"],
      [names.uris, "URI"],
    ] as const) {
      for (const n of list) if (this.isUser(n)) return { user: n, how: `${how} ${JSON.stringify(n)}` };
    }
    const dn = subjectDn(names.subject);
    if (dn !== null) {
      const exact = this.dns.find((u) => dnEqual(u.dn, dn));
      if (exact !== undefined) return { user: exact.user, how: "distinguished name" };
      const reordered = this.dns.find((u) => dnSameRdns(u.dn, dn));
      if (reordered !== undefined) return { user: reordered.user, how: "distinguished name, RDNs reordered" };
    }
    const subject = goSubjectString(names.subject);
    const dcs = goDomainComponents(names.subject);
    if (dcs !== "") {
      const withDcs = `${subject},${dcs}`;
      if (this.isUser(withDcs)) return { user: withDcs, how: `subject with domain components ${JSON.stringify(withDcs)}` };
    }
    if (this.isUser(subject)) return { user: subject, how: `subject ${JSON.stringify(subject)}` };
    return null;
  }

  /** The subject as nats-server names it in its log, for a certificate that maps to nobody. */
  static subjectOf(der: Buffer | null): string {
    if (der === null) return "(none)";
    try {
      return goSubjectString(certificateNames(der).subject);
    } catch {
      return "(unreadable certificate)";
    }
  }
}
