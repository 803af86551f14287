/* Shoal: a sans-socket TLS 1.2 client session over mbedTLS 2.28.
 *
 * shoal_tls holds the client side of one TLS connection and moves its
 * ciphertext only through two non-blocking callbacks supplied by the caller
 * (the device SDK's port on phones, the blocking client of shoal/wss.h in
 * tools and tests), as with mbedtls_ssl_set_bio. It includes no OS header.
 *
 *     shoal_tls_new(&config, &tls, &ei);
 *     while ((err = shoal_tls_handshake(tls, &ei)) == SHOAL_EAGAIN)
 *         wait until the transport is readable or writable;
 *     shoal_tls_write(tls, data, len, &n, &ei);  // accepts n <= len bytes
 *     shoal_tls_flush(tls, &ei);                // until SHOAL_OK
 *     shoal_tls_read(tls, buf, cap, &n, &ei);   // SHOAL_EAGAIN: wait, retry
 *     shoal_tls_close_notify(tls, &ei);         // until SHOAL_OK
 *     shoal_tls_free(tls);
 *
 * Security policy, not configurable: TLS 1.2 only (the only version
 * mbedTLS 2.28 speaks that is acceptable), ECDHE key exchange with AES-GCM
 * or ChaCha20-Poly1305 (ECDSA or RSA certificates), no renegotiation. The
 * server certificate must chain to one of the CA certificates given in the
 * configuration (pinned: the system store is never consulted) and match
 * server_name; there is no mode that skips verification.
 *
 * Session resumption (optional): after a handshake, shoal_tls_get_session
 * gives the session (with the server's ticket when config.session_tickets
 * asked for one, RFC 5077) as bytes to keep; a later connection hands them
 * to shoal_tls_set_session before its handshake and, if the server still
 * accepts the ticket, resumes: no key exchange, no certificate, no
 * signature on either side (shoal_tls_resumed says whether it did). If the
 * server refuses it, the handshake is a full one, verified as usual, and
 * shoal_tls_get_session then gives the new session to keep instead. The
 * saved bytes hold the session's master secret: whoever reads them can
 * decrypt the recorded traffic of that session and of every connection
 * that resumed it, resume it at the server while the server accepts the
 * ticket, and pose as the server to this device while the device offers
 * it (a resumed handshake proves the server only by that secret). Keep
 * them where the device keeps its other secrets, and wipe copies
 * (shoal_tls_session_free). They are bound to server_name and the pinned
 * CA certificates: set on a session with another name or CA they are
 * refused, so a changed pin always means a verified full handshake.
 *
 * server_name must be a DNS name: mbedTLS 2.28 matches the name against the
 * certificate's subjectAltName DNS entries (or CN) only and never matches IP
 * address SANs. To reach a server by address, connect the transport to the
 * address and set server_name to the DNS name in its certificate (for a
 * certificate made by shoal_selfsigned_make (shoal/selfsigned.h) for a
 * test, "localhost").
 *
 * Memory: the shoal_tls object is allocated through shoal/alloc.h;
 * mbedTLS's own buffers (about 2 x 16 KiB records per session, the parsed
 * certificates) come from the allocator mbedTLS was built with, which
 * Debian's build does not let a caller replace.
 *
 * Thread safety: one shoal_tls is used by one thread at a time; different
 * objects may be used in different threads at once. */
#ifndef SHOAL_TLS_H
#define SHOAL_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_tls shoal_tls;

/* What the transport callbacks return besides a byte count (> 0). */
/* Nothing can move now; shoal_tls returns SHOAL_EAGAIN to its caller. */
#define SHOAL_TLS_IO_AGAIN (-(int)SHOAL_EAGAIN)
/* (recv) the peer closed the connection; 0 means the same. */
#define SHOAL_TLS_IO_CLOSED (-(int)SHOAL_ECLOSED)
/* The transport failed; any other negative value means the same. */
#define SHOAL_TLS_IO_ERROR (-(int)SHOAL_EIO)

/* Sends up to len bytes of buf (len > 0). Returns the number of bytes taken
 * (1..len), SHOAL_TLS_IO_AGAIN when the transport cannot take any now
 * (0 is treated the same), or SHOAL_TLS_IO_ERROR. Must not block. */
typedef int (*shoal_tls_send_fn)(void *ctx, const uint8_t *buf, size_t len);

/* Receives up to len bytes into buf (len > 0). Returns the number of bytes
 * stored (1..len), SHOAL_TLS_IO_AGAIN when none are available yet,
 * 0 or SHOAL_TLS_IO_CLOSED when the peer closed the connection, or
 * SHOAL_TLS_IO_ERROR. Must not block. */
typedef int (*shoal_tls_recv_fn)(void *ctx, uint8_t *buf, size_t len);

/* Fills buf with len bytes from a cryptographically secure source (the
 * port's secure random, e.g. getrandom or SecRandomCopyBytes). Returns
 * SHOAL_OK or an error, which fails the operation that needed them with
 * SHOAL_ECRYPTO. */
typedef shoal_err (*shoal_tls_entropy_fn)(void *ctx, uint8_t *buf, size_t len);

typedef struct shoal_tls_config {
    /* Required. DNS name of the server: sent as SNI and matched against
     * the certificate (not an IP address; see above). */
    const char *server_name;
    /* Required. One or more PEM "CERTIFICATE" blocks: the trust anchors
     * the server's chain must end in. ca_pem_len 0 means strlen(ca_pem). */
    const char *ca_pem;
    size_t ca_pem_len;
    /* Optional. Where the CA certificates came from, for messages
     * ("CA file /etc/shoal/ca.pem"); NULL gives "the pinned CA
     * certificates". */
    const char *ca_label;
    /* Optional. How to name the peer in messages, e.g. "localhost:8443";
     * NULL gives server_name. */
    const char *peer_label;
    /* Required. The transport; io_ctx is passed to both and must outlive
     * the object. */
    shoal_tls_send_fn send;
    shoal_tls_recv_fn recv;
    void *io_ctx;
    /* Optional. Entropy for the CTR_DRBG that supplies all randomness of
     * the session; entropy_ctx must outlive the object (the DRBG reseeds
     * from it). NULL: mbedTLS's default entropy sources (the OS). */
    shoal_tls_entropy_fn entropy;
    void *entropy_ctx;
    /* Optional (added in 0.4). Non-zero: ask the server for a session
     * ticket (RFC 5077), which shoal_tls_get_session then includes so a
     * later connection can resume with it. Zero: no ticket extension is
     * sent (a saved session can still resume by session ID, if the server
     * gave one). */
    int session_tickets;
} shoal_tls_config;

/* Creates a client session and parses the CA certificates; no I/O yet. The
 * strings in config are copied or used only during the call; io_ctx and
 * entropy_ctx are borrowed for the object's lifetime.
 * Returns SHOAL_OK and *out, or (with *out NULL and ei filled):
 *   SHOAL_EINVAL   a required field is missing, server_name is empty or
 *                  too long, or ca_pem holds no usable certificate (the
 *                  message names ca_label and the mbedTLS reason);
 *   SHOAL_ECRYPTO  seeding the random generator failed;
 *   SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_new(const shoal_tls_config *config, shoal_tls **out,
                                                  shoal_errinfo *ei);

/* Closes nothing (the transport is the caller's), wipes and frees every
 * key, buffer and the DRBG state. NULL is a no-op. Send close_notify first
 * for an orderly end. */
SHOAL_API void shoal_tls_free(shoal_tls *tls);

/* Advances the handshake as far as the transport allows.
 *   SHOAL_OK        done: the server is authenticated; read and write work.
 *                   Calling again after that returns SHOAL_OK at once.
 *   SHOAL_EAGAIN    waiting on the transport; call again when it can move
 *                   data (shoal_tls_want_write tells which direction).
 *   SHOAL_EAUTH     the certificate failed verification; ei says why and
 *                   what to check ("TLS: certificate of localhost:8443 not
 *                   trusted: ...; check the CA file ...").
 *   SHOAL_EPROTO    the peer broke off or spoke something other than TLS
 *                   1.2 with the allowed cipher suites (fatal alert, no
 *                   common cipher suite, malformed record).
 *   SHOAL_ECLOSED   the peer closed the transport during the handshake.
 *   SHOAL_EIO       the transport callback failed.
 *   SHOAL_ECRYPTO   a local cryptographic failure (random generator).
 *   SHOAL_EINVAL    tls is NULL.
 * Every error other than SHOAL_EAGAIN and SHOAL_EINVAL is final: later
 * calls on the session return SHOAL_ECLOSED. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_handshake(shoal_tls *tls, shoal_errinfo *ei);

/* After SHOAL_EAGAIN from any function: true when the session waits to
 * send (the transport must become writable), false when it waits for
 * input. */
SHOAL_API int shoal_tls_want_write(const shoal_tls *tls);

/* Decrypts application data into buf[0..cap).
 *   SHOAL_OK       *got (1..cap) bytes stored. Call again: more may be
 *                  buffered without the transport becoming readable.
 *   SHOAL_EAGAIN   nothing yet (*got 0).
 *   SHOAL_ECLOSED  the peer sent close_notify, or closed the transport
 *                  without it (ei says which); no more data will come.
 *   SHOAL_EPROTO   the peer sent a corrupt or unexpected record or a fatal
 *                  alert; SHOAL_EIO the transport failed.
 *   SHOAL_ESTATE   the handshake has not completed.
 *   SHOAL_EINVAL   a NULL argument or cap 0.
 * Errors other than SHOAL_EAGAIN, SHOAL_ESTATE and SHOAL_EINVAL are final. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_read(shoal_tls *tls, uint8_t *buf, size_t cap,
                                                   size_t *got, shoal_errinfo *ei);

/* Encrypts application data. Accepts a prefix of data[0..len) and sets
 * *written to its length: with SHOAL_OK, 1..len bytes are taken (copied
 * and encrypted; the caller need not present them again) though the last
 * record may still wait in the session for the transport. Call
 * shoal_tls_flush until SHOAL_OK before waiting for a reply or closing.
 *   SHOAL_EAGAIN   nothing taken: an earlier record is still being sent.
 *   SHOAL_EIO      the transport failed; SHOAL_ECLOSED after a final error
 *                  or close_notify.
 *   SHOAL_ESTATE   the handshake has not completed.
 *   SHOAL_EINVAL   a NULL argument, or len 0.
 * data is borrowed for the call only. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_write(shoal_tls *tls, const uint8_t *data, size_t len,
                                                    size_t *written, shoal_errinfo *ei);

/* Sends what shoal_tls_write left queued. SHOAL_OK when nothing is left,
 * SHOAL_EAGAIN when the transport cannot take it yet, SHOAL_EIO when it
 * failed, SHOAL_ECLOSED after a final error. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_flush(shoal_tls *tls, shoal_errinfo *ei);

/* Flushes queued data, then sends a close_notify alert. SHOAL_OK when the
 * alert has gone to the transport; SHOAL_EAGAIN: call again when the
 * transport is writable; SHOAL_EIO; SHOAL_ECLOSED when the session already
 * failed. Calling it again after SHOAL_OK returns SHOAL_OK. Before the
 * handshake completed there is nothing to close: SHOAL_OK. Afterwards
 * shoal_tls_write returns SHOAL_ECLOSED; reading the peer's remaining data
 * still works. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_close_notify(shoal_tls *tls, shoal_errinfo *ei);

/* Fills buf with len bytes from the session's CTR_DRBG (for WebSocket keys
 * and masks). SHOAL_ECRYPTO if the generator fails, SHOAL_EINVAL for NULL
 * arguments. Same thread-safety as the session. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_random(shoal_tls *tls, uint8_t *buf, size_t len);

/* Offers a session saved by shoal_tls_get_session (on another object)
 * for resumption; call after shoal_tls_new, before the first
 * shoal_tls_handshake. saved is borrowed for the call (wipe it after).
 * Whether the server resumes it shows after the handshake
 * (shoal_tls_resumed); if it does not, the handshake is a full one.
 *   SHOAL_OK        offered.
 *   SHOAL_EFORMAT   not a saved session, or saved by an mbedTLS built
 *                   otherwise (another version or configuration): drop it.
 *   SHOAL_EAUTH     saved for another server_name or other pinned CA
 *                   certificates, or from a handshake whose certificate
 *                   did not verify: drop it.
 *   SHOAL_ESTATE    the handshake has already begun.
 *   SHOAL_ENOMEM, SHOAL_EINVAL (a NULL argument or len 0).
 * On error the session is as before (a full handshake follows). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_set_session(shoal_tls *tls, const uint8_t *saved,
                                                          size_t len, shoal_errinfo *ei);

/* After the handshake completed: the session as bytes a later connection
 * can resume (shoal_tls_set_session): the server's ticket or session ID,
 * the master secret, the server's certificate, bound to server_name and
 * the pinned CA certificates. *out is allocated with shoal/alloc.h and the
 * caller's: release it with shoal_tls_session_free (which wipes it). The
 * bytes change only when the server issued a new ticket in this handshake
 * (mbedTLS servers do at every resumption; shoal-server after a full
 * handshake and when it renews a ticket sealed with its previous key).
 * Secret: see "Session resumption" above.
 *   SHOAL_OK        *out and *len set.
 *   SHOAL_ENOTFOUND the server gave neither a ticket nor a session ID:
 *                   there is nothing to resume (drop what was kept).
 *   SHOAL_ESTATE    the handshake has not completed, or the session failed.
 *   SHOAL_ENOMEM, SHOAL_EINVAL (a NULL argument).
 * On error *out is NULL and *len 0. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tls_get_session(const shoal_tls *tls, uint8_t **out,
                                                          size_t *len, shoal_errinfo *ei);

/* Wipes and frees bytes from shoal_tls_get_session. NULL is a no-op. */
SHOAL_API void shoal_tls_session_free(uint8_t *saved, size_t len);

/* True when the completed handshake resumed the session given to
 * shoal_tls_set_session (the server accepted its ticket or session ID);
 * false before the handshake completed and after a full one. */
SHOAL_API int shoal_tls_resumed(const shoal_tls *tls);

/* The negotiated cipher suite's IANA-style name as mbedTLS spells it
 * ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"), or "" before the handshake
 * completed. The string is static. */
SHOAL_API const char *shoal_tls_ciphersuite(const shoal_tls *tls);

#ifdef __cplusplus
}
#endif

#endif
