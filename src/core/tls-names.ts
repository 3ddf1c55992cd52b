/**
 * TLS as nats-server names it, for either door.
 */

import type { TLSSocket } from "node:tls";

/** The client's certificate (DER) on a TLS connection, or null when it sent none. */
export function peerCertificate(socket: TLSSocket): Buffer | null {
  const raw = (socket.getPeerCertificate(false) as { raw?: Buffer } | null)?.raw;
  return raw === undefined ? null : raw;
}
