/**
 * TLS for NATS client connections, as nats-server does it: by default the
 * server sends INFO in the clear (with `tls_required`) and the client then
 * starts the handshake on the same socket; with `handshake_first` the
 * handshake comes before anything else. A client that does not complete
 * the handshake within the timeout is closed.
 */

import { TLSSocket, type SecureContext } from "node:tls";
import type { Socket } from "node:net";

/** What the door needs to serve TLS: the context made at start from the certificate files. */
export interface NatsTls {
  context: SecureContext;
  verify: boolean;
  /** verify_and_map: the client's certificate names its user (core/tls-map.ts). */
  verifyAndMap: boolean;
  handshakeFirst: boolean;
  /** allow_non_tls: a client may stay plain; INFO says tls_available. */
  allowNonTls: boolean;
  timeoutMs: number;
}

/**
 * The server side of TLS over `socket`. `onFailed` runs once, with the
 * reason, when the handshake fails or does not finish in time; the caller
 * closes the connection.
 */
export function serveTls(socket: Socket, tls: NatsTls, onFailed: (why: string) => void): TLSSocket {
  const secure = new TLSSocket(socket, {
    isServer: true,
    secureContext: tls.context,
    requestCert: tls.verify,
    rejectUnauthorized: tls.verify,
  });
  let settled = false;
  const timer = setTimeout(() => {
    if (settled) return;
    settled = true;
    onFailed("TLS Handshake Timeout");
  }, tls.timeoutMs);
  timer.unref();
  secure.once("secure", () => {
    settled = true;
    clearTimeout(timer);
  });
  secure.once("error", (err) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    onFailed(`TLS Handshake Failure: ${err.message}`);
  });
  return secure;
}
