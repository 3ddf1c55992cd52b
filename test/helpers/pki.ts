/** Certificates for TLS tests, made with openssl in a temporary directory (the caller removes `dir`). */

import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second server certificate from the same CA, for reloads. */
  server2Cert: string;
  server2Key: string;
}

/**
 * A CA, a server certificate for 127.0.0.1 and localhost, and a client
 * certificate, all signed by the CA. `serverAlsoClient`: the server
 * certificate may also authenticate a client (etcd 3.4's gateway presents
 * it to etcd's own gRPC server under --client-cert-auth).
 */
export function makePki(o: { serverAlsoClient?: boolean } = {}): Pki {
  const dir = mkdtempSync(join(tmpdir(), "nagare-tls-"));
  const p = (name: string): string => join(dir, name);
  const ssl = (...args: string[]): void => {
    execFileSync("openssl", args, { stdio: "pipe" });
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  ssl("req", "-x509", ...ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj", "/CN=nagare test CA");
  writeFileSync(p("server.ext"), `subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth${o.serverAlsoClient ? ",clientAuth" : ""}\n`);
  writeFileSync(p("client.ext"), "extendedKeyUsage=clientAuth\n");
  writeFileSync(p("server2.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  for (const who of ["server", "client", "server2"]) {
    ssl("req", ...ec, "-keyout", p(`${who}.key`), "-out", p(`${who}.csr`), "-subj", `/CN=nagare test ${who}`);
    ssl("x509", "-req", "-in", p(`${who}.csr`), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p(`${who}.pem`), "-days", "2", "-extfile", p(`${who}.ext`));
  }
  return { dir, ca: p("ca.pem"), serverCert: p("server.pem"), serverKey: p("server.key"), clientCert: p("client.pem"), clientKey: p("client.key"), server2Cert: p("server2.pem"), server2Key: p("server2.key") };
}

/**
 * Another client certificate from the pki's CA, with the subject `subj` in
 * openssl's `/CN=x/O=y` form (UTF-8; `+` joins a multi-valued RDN when
 * `multiValue`) and, optionally, subjectAltName entries (`email:a@b,DNS:c,URI:d`).
 */
export function clientCertificate(pki: Pki, name: string, subj: string, opts: { san?: string; multiValue?: boolean } = {}): { cert: string; key: string } {
  const p = (f: string): string => join(pki.dir, f);
  const ssl = (...args: string[]): void => {
    execFileSync("openssl", args, { stdio: "pipe" });
  };
  writeFileSync(p(`${name}.ext`), `extendedKeyUsage=clientAuth\n${opts.san === undefined ? "" : `subjectAltName=${opts.san}\n`}`);
  ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-utf8", ...(opts.multiValue ? ["-multivalue-rdn"] : []), "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`), "-subj", subj);
  ssl("x509", "-req", "-in", p(`${name}.csr`), "-CA", pki.ca, "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p(`${name}.pem`), "-days", "2", "-extfile", p(`${name}.ext`));
  return { cert: p(`${name}.pem`), key: p(`${name}.key`) };
}
