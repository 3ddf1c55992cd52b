/**
 * TLS as nats-server names it: cipher suites, curves and versions by Go's
 * crypto/tls names, and OpenSSL's for the same, both ways. Configuration
 * written for nats-server (`cipher_suites`, `curve_preferences`) becomes
 * node:tls options, and /connz describes a TLS connection (version, suite,
 * peer certificates) in nats-server's words, for either door.
 */

import { createHash, X509Certificate } from "node:crypto";
import { createSecureContext, type TLSSocket } from "node:tls";
import { certificateNames, goNameString } from "./x509-names.js";

/** Every suite nats-server 2.9 accepts in `cipher_suites` (its cipherMap), by its name, with OpenSSL's. */
const CIPHER_SUITES: Record<string, string> = {
  TLS_RSA_WITH_RC4_128_SHA: "RC4-SHA",
  TLS_RSA_WITH_3DES_EDE_CBC_SHA: "DES-CBC3-SHA",
  TLS_RSA_WITH_AES_128_CBC_SHA: "AES128-SHA",
  TLS_RSA_WITH_AES_128_CBC_SHA256: "AES128-SHA256",
  TLS_RSA_WITH_AES_256_CBC_SHA: "AES256-SHA",
  TLS_RSA_WITH_AES_256_GCM_SHA384: "AES256-GCM-SHA384",
  TLS_ECDHE_ECDSA_WITH_RC4_128_SHA: "ECDHE-ECDSA-RC4-SHA",
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: "ECDHE-ECDSA-AES128-SHA",
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: "ECDHE-ECDSA-AES256-SHA",
  TLS_ECDHE_RSA_WITH_RC4_128_SHA: "ECDHE-RSA-RC4-SHA",
  TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA: "ECDHE-RSA-DES-CBC3-SHA",
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: "ECDHE-RSA-AES128-SHA",
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256: "ECDHE-RSA-AES128-SHA256",
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256: "ECDHE-ECDSA-AES128-SHA256",
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: "ECDHE-RSA-AES256-SHA",
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: "ECDHE-RSA-AES128-GCM-SHA256",
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ECDHE-ECDSA-AES128-GCM-SHA256",
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: "ECDHE-RSA-AES256-GCM-SHA384",
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "ECDHE-ECDSA-AES256-GCM-SHA384",
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305: "ECDHE-RSA-CHACHA20-POLY1305",
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305: "ECDHE-ECDSA-CHACHA20-POLY1305",
  // TLS 1.3: OpenSSL uses the standard names.
  TLS_AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
  TLS_AES_256_GCM_SHA384: "TLS_AES_256_GCM_SHA384",
  TLS_CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",
};

const GO_NAME_OF = new Map(Object.entries(CIPHER_SUITES).map(([go, openssl]) => [openssl, go]));

/** nats-server's default TLS 1.2 suites (defaultCipherSuites): ECDHE key exchange and AEAD ciphers only. */
const DEFAULT_TLS12_SUITES = [
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
];

/** TLS 1.3 suites when none are named: all three, as Go (which cannot restrict them) always offers, in Go's order of preference. */
const ALL_TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384"];

/**
 * The order in which Go's crypto/tls (nats-server) picks a suite on a
 * machine with AES instructions, whatever order the configuration lists
 * them in: AES-128-GCM before AES-256-GCM (4 rounds fewer, no weaker for
 * TLS) before ChaCha20, ECDHE before plain RSA. The server's context takes
 * its suites in this order and picks by it (`honorCipherOrder`); without
 * that OpenSSL follows the client, and Node's clients list AES-256 first.
 */
const GO_PREFERENCE = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
  "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
  "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
  "TLS_RSA_WITH_AES_128_GCM_SHA256",
  "TLS_RSA_WITH_AES_256_GCM_SHA384",
  "TLS_RSA_WITH_AES_128_CBC_SHA",
  "TLS_RSA_WITH_AES_256_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
  "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
  "TLS_RSA_WITH_AES_128_CBC_SHA256",
  "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
  "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
  "TLS_RSA_WITH_RC4_128_SHA",
];
const goRank = (name: string): number => GO_PREFERENCE.indexOf(name);

const isTls13 = (openssl: string): boolean => openssl.startsWith("TLS_");

/** nats-server's curve names (curvePreferenceMap), with OpenSSL's. */
const CURVES: Record<string, string> = { X25519: "X25519", CurveP256: "P-256", CurveP384: "P-384", CurveP521: "P-521" };

/** Why nagare cannot serve the suite named `name` (nats-server's name), or null when it can. */
export function cipherSuiteProblem(name: unknown): string | null {
  if (typeof name !== "string" || !(name in CIPHER_SUITES)) return `unrecognized cipher ${typeof name === "string" ? name : String(name)}`;
  try {
    createSecureContext({ ciphers: CIPHER_SUITES[name] });
  } catch {
    // RC4 and 3DES: nats-server accepts them; Node's OpenSSL 3 has them switched off.
    return `cipher ${name} is not available in Node's OpenSSL`;
  }
  return null;
}

/** Why `name` is not a curve nagare can use, or null. */
export function curveProblem(name: unknown): string | null {
  return typeof name === "string" && name in CURVES ? null : `unrecognized curve preference ${typeof name === "string" ? name : String(name)}`;
}

/** node:tls `ciphers` for the suites named in nats-server's terms (nats-server's defaults when none), in Go's order of preference. */
export function opensslCiphers(names: readonly string[] | undefined): string {
  const chosen = [...(names ?? DEFAULT_TLS12_SUITES)].sort((a, b) => goRank(a) - goRank(b)).map((n) => CIPHER_SUITES[n]);
  const tls13 = chosen.filter(isTls13);
  return [...(tls13.length > 0 ? tls13 : ALL_TLS13_SUITES), ...chosen.filter((c) => !isTls13(c))].join(":");
}

/** node:tls `ecdhCurve` for the curves named in nats-server's terms; undefined: OpenSSL's choice. */
export function opensslCurves(names: readonly string[] | undefined): string | undefined {
  return names === undefined ? undefined : names.map((n) => CURVES[n]).join(":");
}

/** A peer certificate as nats-server's /connz shows it (`tls_peer_certs`, with `auth`). */
export interface TlsPeerCert {
  subject: string;
  spki_sha256: string;
  cert_sha256: string;
}

/** What /connz shows of a TLS connection, in nats-server's field names. */
export interface TlsConnz {
  tls_version?: string;
  tls_cipher_suite?: string;
  tls_peer_certs?: TlsPeerCert[];
}

/**
 * What /connz shows of a TLS connection: its version and suite as
 * nats-server names them (`1.3`, `TLS_AES_256_GCM_SHA384`) and its peer
 * certificates, read once into `cache` (a connection's peer never
 * changes); nothing before the handshake is done, or on a plain socket.
 */
export function tlsConnz(socket: TLSSocket, cache: { peers: TlsPeerCert[] | null }): TlsConnz {
  if (socket.encrypted !== true) return {};
  const protocol = socket.getProtocol();
  const cipher = socket.getCipher() as { name: string; standardName?: string } | undefined;
  const version = protocol === null ? undefined : /^TLSv(1(?:\.[0-3])?)$/.exec(protocol)?.[1];
  if (version === undefined || cipher === undefined) return {};
  cache.peers ??= peerCertificates(socket);
  const out: TlsConnz = { tls_version: version === "1" ? "1.0" : version, tls_cipher_suite: GO_NAME_OF.get(cipher.name) ?? cipher.standardName ?? cipher.name };
  if (cache.peers.length > 0) out.tls_peer_certs = cache.peers;
  return out;
}

/** The client's certificate (DER) on a TLS connection, or null when it sent none. */
export function peerCertificate(socket: TLSSocket): Buffer | null {
  const raw = (socket.getPeerCertificate(false) as { raw?: Buffer } | null)?.raw;
  return raw === undefined ? null : raw;
}

/**
 * The client's certificate chain as /connz lists it (leaf first, up to the
 * root OpenSSL verified it against), each with Go's subject string and the
 * SHA-256 of its public key and of itself.
 */
function peerCertificates(socket: TLSSocket): TlsPeerCert[] {
  const out: TlsPeerCert[] = [];
  const seen = new Set<string>();
  let c = socket.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | null;
  while (c?.raw !== undefined) {
    const cert_sha256 = createHash("sha256").update(c.raw).digest("hex");
    if (seen.has(cert_sha256)) break; // a self-signed root is its own issuer
    seen.add(cert_sha256);
    let subject = "";
    try {
      subject = goNameString(certificateNames(c.raw).subject);
    } catch {
      // unreadable here: shown without a subject
    }
    const spki = new X509Certificate(c.raw).publicKey.export({ type: "spki", format: "der" });
    out.push({ subject, spki_sha256: createHash("sha256").update(spki).digest("hex"), cert_sha256 });
    c = c.issuerCertificate as typeof c;
  }
  return out;
}
