/**
 * The names a client certificate offers for `verify_and_map`, read from its
 * DER: the subject alternative names (email addresses, DNS names, URIs) and
 * the subject, attribute by attribute in the certificate's own order. And
 * the subject written the way nats-server (Go's crypto/x509/pkix) writes
 * it, since nats-server's users name certificates by those strings.
 *
 * Node's X509Certificate gives the subject as display text (multi-valued
 * RDNs and escaping are lost), so the structure is read here with a small
 * DER walker: only the path to the subject and to the subjectAltName
 * extension, nothing cryptographic (OpenSSL verified the certificate
 * before any of this runs).
 */

/** One attribute of a subject: its OID (dotted) and its value when it is a string type, else null. */
export interface SubjectAttribute {
  oid: string;
  value: string | null;
  /** The DER of the value as the certificate holds it (tag, length, content). */
  der: Buffer;
}

export interface CertificateNames {
  /** rfc822Name entries of subjectAltName, in order. */
  emails: string[];
  /** dNSName entries. */
  dnsNames: string[];
  /** uniformResourceIdentifier entries. */
  uris: string[];
  /** The subject's RDNs in the certificate's order (the most significant first), each a set of attributes. */
  subject: SubjectAttribute[][];
}

/** Thrown for DER that does not hold a certificate. */
export class DerError extends Error {}

interface Tlv {
  tag: number;
  /** Offset of the first content byte. */
  start: number;
  /** Offset past the last content byte. */
  end: number;
  /** Offset of the tag byte. */
  at: number;
}

/** The element at `at`, which must end by `limit`. Only low tag numbers (all X.509 needs) and definite lengths. */
function tlv(b: Buffer, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new DerError("truncated");
  const tag = b[at];
  if ((tag & 0x1f) === 0x1f) throw new DerError("high tag number");
  let len = b[at + 1];
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > limit) throw new DerError("bad length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p + i];
    p += n;
  }
  if (p + len > limit) throw new DerError("truncated");
  return { tag, start: p, end: p + len, at };
}

/** The elements inside a constructed element, in order. */
function children(b: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let p = parent.start; p < parent.end; ) {
    const c = tlv(b, p, parent.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined || t.tag !== tag) throw new DerError(`expected ${what}`);
  return t;
}

function oidString(b: Buffer, t: Tlv): string {
  if (t.end === t.start) throw new DerError("empty OID");
  const first = b[t.start];
  const parts: number[] = [first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80];
  let v = 0;
  for (let p = t.start + 1; p < t.end; p++) {
    v = v * 128 + (b[p] & 0x7f);
    if (!(b[p] & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join(".");
}

/** The string types Go's encoding/asn1 reads into a string; any other value is not a string. */
function stringValue(b: Buffer, t: Tlv): string | null {
  const content = b.subarray(t.start, t.end);
  switch (t.tag) {
    case 0x0c: // UTF8String
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x12: // NumericString
      return content.toString("utf8");
    case 0x14: // T61String: Go takes the bytes as they are
      return content.toString("latin1");
    case 0x1e: {
      // BMPString: UTF-16 big-endian
      if (content.length % 2 !== 0) return null;
      const swapped = Buffer.from(content);
      swapped.swap16();
      return swapped.toString("utf16le");
    }
    default:
      return null;
  }
}

const SUBJECT_ALT_NAME = "2.5.29.17";

/**
 * The names in a certificate (DER). Throws DerError when it is not a
 * certificate, or has two subjectAltName extensions (Go refuses such a
 * certificate outright).
 */
export function certificateNames(der: Buffer): CertificateNames {
  const cert = expect(tlv(der, 0, der.length), 0x30, "a certificate");
  const tbs = expect(children(der, cert)[0], 0x30, "tbsCertificate");
  const fields = children(der, tbs);
  let i = fields[0]?.tag === 0xa0 ? 1 : 0; // version
  i += 4; // serialNumber, signature, issuer, validity
  const subjectTlv = expect(fields[i], 0x30, "subject");
  i += 2; // subject, subjectPublicKeyInfo
  const names: CertificateNames = { emails: [], dnsNames: [], uris: [], subject: [] };
  for (const rdn of children(der, subjectTlv)) {
    expect(rdn, 0x31, "a relative distinguished name");
    const attrs: SubjectAttribute[] = [];
    for (const atv of children(der, rdn)) {
      const [type, value] = children(der, expect(atv, 0x30, "an attribute"));
      if (value === undefined) throw new DerError("attribute without a value");
      attrs.push({ oid: oidString(der, expect(type, 0x06, "an attribute type")), value: stringValue(der, value), der: der.subarray(value.at, value.end) });
    }
    names.subject.push(attrs);
  }
  let sawSan = false;
  for (; i < fields.length; i++) {
    if (fields[i].tag !== 0xa3) continue; // issuerUniqueID, subjectUniqueID
    const list = expect(children(der, fields[i])[0], 0x30, "extensions");
    for (const ext of children(der, list)) {
      const parts = children(der, expect(ext, 0x30, "an extension"));
      if (oidString(der, expect(parts[0], 0x06, "an extension id")) !== SUBJECT_ALT_NAME) continue;
      if (sawSan) throw new DerError("two subjectAltName extensions");
      sawSan = true;
      const value = expect(parts[parts.length - 1], 0x04, "an extension value");
      const general = expect(tlv(der, value.start, value.end), 0x30, "GeneralNames");
      for (const n of children(der, general)) {
        const text = der.toString("latin1", n.start, n.end); // IA5String: ASCII
        if (n.tag === 0x81) names.emails.push(text);
        else if (n.tag === 0x82) names.dnsNames.push(text);
        else if (n.tag === 0x86) names.uris.push(text);
      }
    }
  }
  return names;
}

/** The attribute types Go's pkix names; others are written as their OID. */
const PKIX_TYPE_NAMES: Record<string, string> = {
  "2.5.4.6": "C",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.3": "CN",
  "2.5.4.5": "SERIALNUMBER",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "STREET",
  "2.5.4.17": "POSTALCODE",
};

/** Go's pkix.Name fields, in the order Name.ToRDNSequence writes them (before the string reverses them). */
const TO_RDN_ORDER = ["2.5.4.6", "2.5.4.8", "2.5.4.7", "2.5.4.9", "2.5.4.17", "2.5.4.10", "2.5.4.11", "2.5.4.3", "2.5.4.5"];
/** Fields that hold one value (the last one read), not a list. */
const SINGLE_VALUED = new Set(["2.5.4.3", "2.5.4.5"]);

type GoRdn = Array<{ oid: string; value: string }>;

/**
 * RFC 2253 escaping as Go's RDNSequence.String does it: `,+"\<>;` anywhere,
 * a space at either end, `#` at the start.
 */
function goEscape(v: string): string {
  let out = "";
  let k = 0;
  const last = Buffer.byteLength(v) - 1;
  for (const ch of v) {
    const escape = ',+"\\<>;'.includes(ch) || (ch === " " && (k === 0 || k === last)) || (ch === "#" && k === 0);
    out += escape ? `\\${ch}` : ch;
    k += Buffer.byteLength(ch);
  }
  return out;
}

/** Go's RDNSequence.String of standard attributes: the last RDN first, attributes of one RDN joined by `+`. */
function goRdnString(rdns: GoRdn[]): string {
  const parts: string[] = [];
  for (let i = rdns.length - 1; i >= 0; i--) {
    parts.push(
rdns[i].map((a) => `${PKIX_TYPE_NAMES[a.oid]}=${goEscape(a.value)}`).join("+"),
    );
  }
  return parts.join(",");
}

/** The characters of an ASN.1 PrintableString as Go's encoder allows them (no `*`, no `&`). */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** A string as Go's asn1.Marshal encodes one without a declared type: PrintableString if it can be, else UTF8String. */
function goMarshalString(v: string): Buffer {
  const content = Buffer.from(v, "utf8");
  const tag = PRINTABLE.test(v) ? 0x13 : 0x0c;
  const n = content.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), content]);
}

/** The subject's standard fields as Go's pkix.Name.ToRDNSequence rebuilds them: a fixed order, one RDN per type. */
function toRdnSequence(subject: SubjectAttribute[][]): GoRdn[] {
  const byType = new Map<string, string[]>();
  for (const rdn of subject) {
    for (const a of rdn) {
      if (a.value === null || !(a.oid in PKIX_TYPE_NAMES)) continue;
      const list = byType.get(a.oid) ?? [];
      if (SINGLE_VALUED.has(a.oid)) list.length = 0;
      list.push(a.value);
      byType.set(a.oid, list);
    }
  }
  const out: GoRdn[] = [];
  for (const oid of TO_RDN_ORDER) {
    const values = byType.get(oid);
    if (values !== undefined && !(SINGLE_VALUED.has(oid) && values[0] === "")) out.push(values.map((value) => ({ oid, value })));
  }
  return out;
}

/**
 * The subject as nats-server's verify_and_map looks it up by name:
 * `cert.Subject.ToRDNSequence().String()`, e.g. `CN=alice,OU=ops,O=acme,C=US`.
 * Only the attributes Go's pkix.Name has fields for (CN, SERIALNUMBER, C, O,
 * OU, L, ST, STREET, POSTALCODE), one RDN per type in a fixed order, the
 * values of a type joined by `+`; others (DC, UID, emailAddress) are left out.
 */
export function goSubjectString(subject: SubjectAttribute[][]): string {
  return goRdnString(toRdnSequence(subject));
}

/** The domain components (DC) of the subject, as `DC=a,DC=b` in the certificate's order; "" when none. */
export function goDomainComponents(subject: SubjectAttribute[][]): string {
  const dcs: string[] = [];
  for (const rdn of subject) for (const a of rdn) if (a.oid === DC && a.value !== null) dcs.push(`DC=${a.value}`);
  return dcs.join(",");
}

const DC = "0.9.2342.19200300.100.1.25";

/**
 * Go's pkix.Name.String() (what nats-server's /connz shows as a peer
 * certificate's subject): goSubjectString followed by the attributes it
 * has no field for, each as `oid=#hex`, the last one first.
 */
export function goNameString(subject: SubjectAttribute[][]): string {
  const extra: string[] = [];
  for (const rdn of subject) {
    for (const a of rdn) {
      if (a.oid in PKIX_TYPE_NAMES) continue;
      // Go re-encodes a string value; anything else is shown as the certificate holds it.
      extra.push(`${a.oid}=#${(a.value === null ? a.der : goMarshalString(a.value)).toString("hex")}`);
    }
  }
  return [goSubjectString(subject), ...extra.reverse()].filter((s) => s !== "").join(",");
}
