/* Shoal: the wire protocol's transport names and message size limits.
 *
 * A device reaches a server at wss://HOST:PORT SHOAL_PROTOCOL_WS_PATH and
 * requests the WebSocket subprotocol SHOAL_PROTOCOL_SUBPROTOCOL; the server
 * refuses any other path or subprotocol (docs/protocol.md, "URL and
 * subprotocol"). Every component that opens, accepts or tests a session
 * uses these names, so a change of version changes them everywhere.
 *
 * Plain literals with no dependencies: they may be concatenated
 * with other literals ("GET " SHOAL_PROTOCOL_WS_PATH " HTTP/1.1"). */
#ifndef SHOAL_WIRE_H
#define SHOAL_WIRE_H

/* The WebSocket request path of a device session. */
#define SHOAL_PROTOCOL_WS_PATH "/v1/session"
/* The WebSocket subprotocol (Sec-WebSocket-Protocol) of a device session. */
#define SHOAL_PROTOCOL_SUBPROTOCOL "shoal.v1"

/* Default limit on one encoded Envelope, both directions (1 MiB). */
#define SHOAL_PROTOCOL_MAX_MESSAGE_DEFAULT (1u << 20)
/* Smallest configurable limit: room for a CheckIn with a full-size token. */
#define SHOAL_PROTOCOL_MAX_MESSAGE_MIN 8192u

#endif
