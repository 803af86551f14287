/* Shoal network layer: the keys that seal TLS session tickets.
 *
 * With session tickets (RFC 5077 in TLS 1.2; the PSK tickets of RFC 8446
 * §4.6.1 in TLS 1.3) the server keeps no per-session state: it seals the
 * session (master secret, cipher suite, time) into a ticket the client
 * stores and presents on its next connection, which then skips the key
 * exchange and the signature of a full handshake. Whoever holds a ticket
 * key can open every ticket sealed with it, and from the master secret
 * read the traffic of those sessions: the keys are made at start with
 * libsodium's randombytes_buf, live in sodium_malloc memory (guarded,
 * locked, wiped when freed), are never logged or written anywhere, and
 * rotate every period:
 *
 *   a key is current for one period (new tickets are sealed with it),
 *   then previous for one more (its tickets still open, and are renewed
 *   with the current key), then wiped.
 *
 * So a ticket is accepted for less than two periods after it was issued,
 * and a restart (new keys) refuses every ticket issued before it. The
 * rotation is lazy: it happens at the first use of the keys after it fell
 * due, as if it had happened on time (after two periods or more without a
 * handshake, both keys are replaced).
 *
 * The ring is used on the libwebsockets service thread (OpenSSL calls the
 * ticket callback there); a mutex makes every function safe from any
 * thread. Time is passed in (monotonic microseconds) so that tests can
 * drive the schedule. */
#ifndef SHOAL_NET_TICKETS_INT_H
#define SHOAL_NET_TICKETS_INT_H

#include <stdint.h>

#include "shoal/err.h"

/* The key name a ticket carries in the clear (OpenSSL's key_name). */
#define SHOAL_NET_TICKET_NAME_LEN 16

typedef struct shoal_net_tickets shoal_net_tickets;

/* What a ticket's key name finds (shoal_net_tickets_find). */
typedef enum shoal_net_ticket_key {
    SHOAL_NET_TICKET_UNKNOWN = 0,  /* another process's, or older than two periods */
    SHOAL_NET_TICKET_CURRENT = 1,  /* the current key's: resume */
    SHOAL_NET_TICKET_PREVIOUS = 2, /* the previous key's: resume and issue a new ticket */
} shoal_net_ticket_key;

/* Makes the ring with a fresh current key and no previous one; the first
 * rotation falls due at now_us + period_us (period_us > 0). SHOAL_ENOMEM
 * (sodium_malloc failed), SHOAL_ECRYPTO (libsodium did not initialise),
 * SHOAL_EINVAL. On error *out is NULL. */
shoal_err shoal_net_tickets_new(int64_t period_us, int64_t now_us, shoal_net_tickets **out);
/* Wipes the keys and frees the ring. NULL is a no-op. */
void shoal_net_tickets_free(shoal_net_tickets *t);

/* Which key a ticket's name belongs to at now_us (after the rotations
 * due by then). */
shoal_net_ticket_key shoal_net_tickets_find(shoal_net_tickets *t,
                                            const uint8_t name[SHOAL_NET_TICKET_NAME_LEN],
                                            int64_t now_us);
/* The name of the key new tickets are sealed with at now_us. */
void shoal_net_tickets_current_name(shoal_net_tickets *t, int64_t now_us,
                                    uint8_t name[SHOAL_NET_TICKET_NAME_LEN]);
/* Rotations done so far (for the log and tests). */
uint64_t shoal_net_tickets_rotations(shoal_net_tickets *t);

/* Makes OpenSSL seal and open the tickets of ssl_ctx (an SSL_CTX *) with
 * the ring (SSL_CTX_set_tlsext_ticket_key_evp_cb, AES-256-CBC and
 * HMAC-SHA256 as RFC 5077 §4 suggests); the ring must outlive the
 * SSL_CTX. Returns 0, or -1 when OpenSSL refused. */
int shoal_net_tickets_install(shoal_net_tickets *t, void *ssl_ctx);

#endif
