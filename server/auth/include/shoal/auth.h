/* Shoal: device authentication at check-in.
 *
 * Every population has a secret (server_config.h) and one of two modes:
 *
 *   SHOAL_AUTH_SHARED  every device presents the population secret itself
 *                      as its CheckIn.auth_token;
 *   SHOAL_AUTH_HMAC    every device presents its own bearer token
 *                        v1.<device id>.<mac>
 *                      where <mac> is the 64 lowercase hex digits of
 *                      HMAC-SHA-256(key = secret,
 *                                   message = population "\n" device id)
 *                      and the device id is 1 to 64 characters of
 *                      [A-Za-z0-9._-]. The server stores no per-device state:
 *                      `shoal-server token` mints tokens with
 *                      shoal_auth_mint, and rotating the secret revokes all
 *                      of them.
 *
 * Secrets and tokens are compared in constant time (sodium_memcmp) and never
 * appear in a message or a log line; secret-dependent intermediates are wiped
 * (sodium_memzero) before returning.
 *
 * Thread safety: both functions may be called from any thread at once; they
 * keep no state beyond libsodium's one-time initialisation. */
#ifndef SHOAL_AUTH_H
#define SHOAL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

typedef enum shoal_auth_mode {
    /* The device's CheckIn.auth_token must equal the population secret
     * (compared in constant time). */
    SHOAL_AUTH_SHARED = 1,
    /* Per-device tokens "v1.<device id>.<hex HMAC-SHA-256(secret, population
     * "\n" device id)>", minted with shoal_auth_mint (`shoal-server token`). */
    SHOAL_AUTH_HMAC = 2,
} shoal_auth_mode;

/* Longest device id, in bytes (without the terminating NUL). */
#define SHOAL_AUTH_DEVICE_ID_MAX 64u
/* Length of the MAC part of an HMAC token (lowercase hex of 32 bytes). */
#define SHOAL_AUTH_MAC_HEX_LEN 64u
/* Buffer size that holds any minted token with its terminating NUL:
 * "v1." + device id + "." + mac + NUL. */
#define SHOAL_AUTH_TOKEN_MAX (3u + SHOAL_AUTH_DEVICE_ID_MAX + 1u + SHOAL_AUTH_MAC_HEX_LEN + 1u)

/* Checks the token a device presented for `population`.
 *
 * mode        SHOAL_AUTH_SHARED or SHOAL_AUTH_HMAC (the population's mode).
 * secret      the population secret, secret_len >= 1 bytes.
 * population  the population's name, NUL-terminated (part of the HMAC
 *             message; also named in the error message).
 * token       the bytes the device presented (not NUL-terminated),
 *             token_len bytes; 0 is allowed and refused.
 * device_id   optional (NULL: not wanted): receives the authenticated device
 *             id (HMAC) or "" (SHARED) on SHOAL_OK, and "" on any error.
 *
 * Returns SHOAL_OK when the token is valid; SHOAL_EAUTH when it is not,
 * with ei saying either "auth token for population '<name>' is not valid"
 * or, for an HMAC token that does not have the v1.<device>.<mac> form,
 * "malformed token: expected v1.<device>.<mac> (<which part>)" — never the
 * token or the secret; SHOAL_EINVAL for a bad argument (NULL secret,
 * population or token with token_len > 0, secret_len 0, unknown mode);
 * SHOAL_ECRYPTO when libsodium cannot be initialised.
 *
 * SHARED compares the lengths first (a length mismatch is refused at once:
 * the secret's length is not treated as secret) and then the contents in
 * constant time. HMAC parses the token, recomputes the MAC and compares it
 * in constant time. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_auth_check(shoal_auth_mode mode, const uint8_t *secret,
                                                     size_t secret_len, const char *population,
                                                     const uint8_t *token, size_t token_len,
                                                     char device_id[SHOAL_AUTH_DEVICE_ID_MAX + 1],
                                                     shoal_errinfo *ei);

/* Mints the HMAC-mode token of `device_id` for `population` into `out`
 * (`cap` bytes; SHOAL_AUTH_TOKEN_MAX always suffices), NUL-terminated.
 *
 * Returns SHOAL_OK; SHOAL_EINVAL for a NULL argument, secret_len 0, a device
 * id that is empty, longer than SHOAL_AUTH_DEVICE_ID_MAX or has a character
 * outside [A-Za-z0-9._-], or a `cap` too small for the token (out is then
 * set to "" when cap >= 1); SHOAL_ECRYPTO when libsodium cannot be
 * initialised. The token is a credential: the caller must not log it. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_auth_mint(const uint8_t *secret, size_t secret_len,
                                                    const char *population, const char *device_id,
                                                    char *out, size_t cap, shoal_errinfo *ei);

#endif
