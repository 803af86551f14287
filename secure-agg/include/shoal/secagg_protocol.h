/* Shoal: the SecAgg / SecAgg+ protocol as two pure state machines, one
 * for a device and one for the server's side of one group (Bonawitz et
 * al. CCS 2017, figure 4 and its malicious variant, figure 5; Bell et al.
 * CCS 2020 for the sparse graph). Messages in, messages out; no I/O, no
 * clock (the server's driver decides when a phase's deadline has passed
 * and closes it), no threads.
 *
 * A group has n devices with indices 0..n-1 and threshold t. Phases:
 *
 *   0 advertise  device -> server: two X25519 public keys (c: transport,
 *                s: masks), signed with the device's Ed25519 key in the
 *                malicious variant.                       U1 = who sent them
 *   1 share      server -> device: the keys of its neighbours in U1;
 *                device -> server: for each neighbour v, Enc(k_uv, shares
 *                of its s secret key and of its self-mask seed b_u).
 *                                                          U2 = who sent them
 *   2 mask       server -> device: the ciphertexts addressed to it from U2;
 *                device -> server: its input masked with PRG(b_u) and
 *                +-PRG(s_uv) for every neighbour v in U2.  U3 = who sent it
 *   3 confirm    (malicious variant only) server -> device: U3; device ->
 *                server: its signature of U3.            U4 = who signed it
 *   4 unmask     server -> device: U3 (and U4's signatures); device ->
 *                server: for each neighbour v in U2, the share of b_v if v
 *                is in U3, else the share of v's s secret key; never both.
 *
 * The server then rebuilds each survivor's b and each dropped device's s
 * key from t shares, removes their masks from the sum of U3's inputs, and
 * learns that sum and nothing else. Every phase needs at least t
 * participants, or the group fails without revealing anything.
 *
 * Ring elements travel as little-endian words: 4 bytes each for rings of
 * up to 32 bits, 8 for 33 to 64 (shoal_secagg_ring_bytes).
 *
 * Secrets (X25519 secret keys, the self-mask seed, decrypted shares) live
 * in sodium_malloc memory and are wiped when no longer needed and when the
 * object is freed. Nothing here logs.
 *
 * Thread safety: one object is used by one thread at a time. */
#ifndef SHOAL_SECAGG_PROTOCOL_H
#define SHOAL_SECAGG_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/secagg.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_SECAGG_SIGN_PUBLIC_KEY_BYTES 32
#define SHOAL_SECAGG_SIGN_SECRET_KEY_BYTES 64
#define SHOAL_SECAGG_SIGNATURE_BYTES       64
/* One sealed share message: sender and receiver (4 bytes each), the two
 * shares, sealed. */
#define SHOAL_SECAGG_SHARES_PLAIN_BYTES (8 + 2 * SHOAL_SECAGG_SHARE_BYTES)
#define SHOAL_SECAGG_SHARES_SEALED_BYTES                                                           \
    (SHOAL_SECAGG_SHARES_PLAIN_BYTES + SHOAL_SECAGG_SEAL_OVERHEAD)

/* What every party of a group agrees on, announced by the server. */
typedef struct shoal_secagg_config {
    uint32_t n;             /* devices in the group, 3..SHOAL_SECAGG_MAX_SHAREHOLDERS */
    uint32_t threshold;     /* t: 2..degree */
    uint32_t degree;        /* k: n - 1 for SecAgg; an even 2..n-2 for SecAgg+ */
    uint8_t graph_seed[32]; /* SecAgg+: the graph's seed */
    uint8_t session_id[SHOAL_SECAGG_SESSION_ID_BYTES]; /* fresh per round and group */
    unsigned bits;                                     /* ring Z_(2^bits), 1..64 */
    size_t length;                                     /* ring elements per input, >= 1 */
    /* Malicious variant: every device's Ed25519 public key (n entries),
     * registered before the round; NULL: the semi-honest variant. Borrowed:
     * must outlive the objects made with this config. */
    const uint8_t (*verify_keys)[SHOAL_SECAGG_SIGN_PUBLIC_KEY_BYTES];
} shoal_secagg_config;

/* Checks a config. SHOAL_EINVAL with `ei` naming the field otherwise
 * (threshold above the degree, a degree that is neither n - 1 nor an even
 * 2..n-2, ...). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_config_check(const shoal_secagg_config *cfg,
                                                              shoal_errinfo *ei);

/* Bytes one ring element takes on the wire: 4 for bits <= 32, else 8. */
SHOAL_API size_t shoal_secagg_ring_bytes(unsigned bits);

/* ---- messages ------------------------------------------------------------------------ */

typedef struct shoal_secagg_advertise {
    uint32_t index;
    uint8_t c_pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES];
    uint8_t s_pk[SHOAL_SECAGG_PUBLIC_KEY_BYTES];
    uint8_t signature[SHOAL_SECAGG_SIGNATURE_BYTES]; /* malicious variant; else zero */
} shoal_secagg_advertise;

typedef struct shoal_secagg_sealed_shares {
    uint32_t from, to;
    uint8_t sealed[SHOAL_SECAGG_SHARES_SEALED_BYTES];
} shoal_secagg_sealed_shares;

typedef enum shoal_secagg_share_kind {
    SHOAL_SECAGG_SHARE_SELF_MASK = 1, /* of b_v: v survived */
    SHOAL_SECAGG_SHARE_MASK_KEY = 2   /* of v's s secret key: v dropped */
} shoal_secagg_share_kind;

typedef struct shoal_secagg_revealed_share {
    uint32_t of; /* whose secret */
    shoal_secagg_share_kind kind;
    uint8_t share[SHOAL_SECAGG_SHARE_BYTES];
} shoal_secagg_revealed_share;

/* ---- the device ----------------------------------------------------------------------- */

typedef struct shoal_secagg_client shoal_secagg_client;

/* A device's side of one group as device `index`. sign_sk: its Ed25519
 * secret key (malicious variant; NULL otherwise), copied into protected
 * memory. SHOAL_EINVAL for a bad config or index; SHOAL_ENOMEM. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_client_new(const shoal_secagg_config *cfg, uint32_t index,
                        const uint8_t sign_sk[SHOAL_SECAGG_SIGN_SECRET_KEY_BYTES],
                        shoal_secagg_client **out, shoal_errinfo *ei);
/* Wipes and frees. NULL is a no-op. */
SHOAL_API void shoal_secagg_client_free(shoal_secagg_client *c);

/* Phase 0: makes the two key pairs and the advertisement. SHOAL_ESTATE
 * when called twice. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_client_advertise(shoal_secagg_client *c,
                                                                  shoal_secagg_advertise *out,
                                                                  shoal_errinfo *ei);

/* Phase 1: takes the neighbours' advertisements (`count` of them, any
 * order; entries for non-neighbours are refused) and writes one sealed
 * share message per neighbour in U1 into out[0..*out_count) (room for
 * degree entries). Refused (SHOAL_EPROTO, nothing sent): fewer than t
 * neighbours, a duplicate or unknown index, a repeated public key, a key
 * equal to its own, a bad signature (malicious variant); SHOAL_ECRYPTO for
 * a low-order key. SHOAL_ESTATE out of phase. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_client_share(shoal_secagg_client *c,
                                                              const shoal_secagg_advertise *keys,
                                                              size_t count,
                                                              shoal_secagg_sealed_shares *out,
                                                              size_t *out_count, shoal_errinfo *ei);

/* Phase 2: takes the sealed shares addressed to this device (U2's
 * neighbours), checks and keeps them, and masks `input` (cfg.length ring
 * elements, each < 2^bits) into `masked` (cfg.length x
 * shoal_secagg_ring_bytes bytes). Refused (SHOAL_EPROTO): fewer than t, a
 * sender that is not a neighbour that shared keys in phase 1, a duplicate,
 * a message not addressed to this device; SHOAL_ECRYPTO: a message that
 * does not open or whose inner sender and receiver differ from the outer
 * ones. An input element >= 2^bits is SHOAL_EINVAL. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_client_mask(shoal_secagg_client *c,
                                                             const shoal_secagg_sealed_shares *in,
                                                             size_t count, const uint64_t *input,
                                                             uint8_t *masked, shoal_errinfo *ei);

/* Phase 3 (malicious variant): signs U3 (`survivors`, ascending indices).
 * SHOAL_EPROTO when U3 has fewer than t devices, is not ascending, or
 * leaves this device out. */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_client_confirm(shoal_secagg_client *c, const uint32_t *survivors, size_t count,
                            uint8_t signature[SHOAL_SECAGG_SIGNATURE_BYTES], shoal_errinfo *ei);

/* Phase 4: given U3 (ascending) and, in the malicious variant, the
 * signatures of U4 (signers[i] signed signatures[i]; the same U3 this
 * device confirmed; at least t valid ones, every signer in U3), writes
 * the shares it holds into out[0..*out_count) (room for degree entries):
 * for each neighbour v that sent it shares in phase 2, the share of b_v if
 * v is in U3, else the share of v's s key. Answers once: a second call is
 * SHOAL_ESTATE, so no one learns both shares of one device from it.
 * SHOAL_EPROTO for fewer than t survivors, a U3 that is not ascending or
 * that changed since phase 3, or too few valid signatures. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_client_unmask(
    shoal_secagg_client *c, const uint32_t *survivors, size_t count, const uint32_t *signers,
    const uint8_t (*signatures)[SHOAL_SECAGG_SIGNATURE_BYTES], size_t signer_count,
    shoal_secagg_revealed_share *out, size_t *out_count, shoal_errinfo *ei);

/* ---- the server's side of a group ------------------------------------------------------ */

typedef struct shoal_secagg_server shoal_secagg_server;

typedef enum shoal_secagg_phase {
    SHOAL_SECAGG_PHASE_ADVERTISE = 0,
    SHOAL_SECAGG_PHASE_SHARE,
    SHOAL_SECAGG_PHASE_MASK,
    SHOAL_SECAGG_PHASE_CONFIRM,
    SHOAL_SECAGG_PHASE_UNMASK,
    SHOAL_SECAGG_PHASE_DONE,
    SHOAL_SECAGG_PHASE_FAILED
} shoal_secagg_phase;

/* The phase's name ("advertise", ...), static. */
SHOAL_API const char *shoal_secagg_phase_name(shoal_secagg_phase phase);

SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_new(const shoal_secagg_config *cfg,
                                                            shoal_secagg_server **out,
                                                            shoal_errinfo *ei);
SHOAL_API void shoal_secagg_server_free(shoal_secagg_server *s);

SHOAL_API shoal_secagg_phase shoal_secagg_server_phase(const shoal_secagg_server *s);

/* Devices that took part in the given phase (U1..U5 as counts). */
SHOAL_API uint32_t shoal_secagg_server_participants(const shoal_secagg_server *s,
                                                    shoal_secagg_phase phase);

/* 1 when every device still in the group has answered the current phase
 * (the driver may close it early), else 0. */
SHOAL_API int shoal_secagg_server_phase_complete(const shoal_secagg_server *s);

/* Each receives one device's message of the current phase. Refused with a
 * reason in `ei`, the server's state unchanged: SHOAL_ESTATE for a message
 * of another phase, a device that already answered this phase, or one that
 * dropped out of an earlier phase (a late device cannot rejoin);
 * SHOAL_EPROTO for a malformed message (bad index, duplicate public key,
 * a share not addressed by this sender, an unknown target, both kinds of
 * share for one device); SHOAL_EAUTH for a bad signature. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_on_advertise(
    shoal_secagg_server *s, const shoal_secagg_advertise *msg, shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_on_shares(
    shoal_secagg_server *s, uint32_t from, const shoal_secagg_sealed_shares *msgs, size_t count,
    shoal_errinfo *ei);
/* `masked`: cfg.length x shoal_secagg_ring_bytes bytes, added into the
 * running sum at once (inputs are never stored). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_on_masked(shoal_secagg_server *s,
                                                                  uint32_t from,
                                                                  const uint8_t *masked, size_t len,
                                                                  shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_on_confirm(
    shoal_secagg_server *s, uint32_t from, const uint8_t signature[SHOAL_SECAGG_SIGNATURE_BYTES],
    shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_on_unmask(
    shoal_secagg_server *s, uint32_t from, const shoal_secagg_revealed_share *shares, size_t count,
    shoal_errinfo *ei);

/* Closes the current phase (its deadline passed, or it is complete): the
 * devices that did not answer are out for good. With fewer than t left the
 * group fails (SHOAL_ELIMIT, phase FAILED; nothing is revealed: no shares
 * have been asked for). Closing the unmask phase rebuilds the secrets and
 * unmasks the sum (SHOAL_ECRYPTO and FAILED when a secret cannot be
 * rebuilt consistently). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_close_phase(shoal_secagg_server *s,
                                                                    shoal_errinfo *ei);

/* What to send each device after closing a phase. Returned pointers point
 * into the server and live until the next call that changes it (or
 * shoal_secagg_server_free); the caller copies what it sends. */
/* After advertise (phase SHARE): copies into out[0..*count) the
 * advertisements of `device`'s neighbours that are in U1; out has room for
 * cfg.degree entries. SHOAL_EINVAL for a NULL argument or a device >= n;
 * SHOAL_ESTATE outside the share phase (*count is then 0). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_keys_for(const shoal_secagg_server *s,
                                                                 uint32_t device,
                                                                 shoal_secagg_advertise *out,
                                                                 size_t *count);
/* After share (phase MASK): *out points at the sealed shares addressed to
 * `device` by the devices in U2, *count of them (borrowed, see above).
 * SHOAL_EINVAL for a NULL argument or a device >= n; SHOAL_ESTATE outside
 * the mask phase (*out NULL, *count 0). */
SHOAL_NODISCARD SHOAL_API shoal_err
shoal_secagg_server_inbox(const shoal_secagg_server *s, uint32_t device,
                          const shoal_secagg_sealed_shares **out, size_t *count);
/* After mask (and confirm): U3, ascending, *count entries; and U4 with its
 * signatures (signers[i] made signatures[i]), its count returned. Both are
 * borrowed (see above); before the mask phase closed they are NULL and 0. */
SHOAL_API const uint32_t *shoal_secagg_server_survivors(const shoal_secagg_server *s,
                                                        size_t *count);
SHOAL_API size_t
shoal_secagg_server_signatures(const shoal_secagg_server *s, const uint32_t **signers,
                               const uint8_t (**signatures)[SHOAL_SECAGG_SIGNATURE_BYTES]);

/* After the unmask phase closed: the unmasked sum of U3's inputs
 * (cfg.length elements mod 2^bits) and how many inputs it sums. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_secagg_server_result(const shoal_secagg_server *s,
                                                               const uint64_t **sum,
                                                               uint32_t *contributors);

#ifdef __cplusplus
}
#endif

#endif
