/* Fuzz target for shoal_envelope_decode (protocol/src/envelope.c).
 *
 * Any byte string, decoded as sent by the device, by the server or by
 * either, is refused with SHOAL_EPROTO, SHOAL_ELIMIT or SHOAL_ENOMEM, no
 * envelope and a non-empty message; or accepted, and then re-encoding it
 * with the same codec succeeds (the rules are the same both ways), decoding
 * that re-encoding gives the same bytes again, and the sender-specific
 * verdicts agree with the body's direction. shoal_envelope_unsupported_version
 * finds a version only where decode refused the CheckIn's version. Failing
 * each allocation the decode makes in turn must give SHOAL_ENOMEM and leave
 * nothing allocated. A violated invariant aborts. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A small limit as well as the default one, so the size check is reached
 * by inputs libFuzzer can grow to. */
#define SMALL_LIMIT SHOAL_PROTOCOL_MAX_MESSAGE_MIN

static shoal_err decode_checked(const shoal_codec *codec, const uint8_t *data, size_t size)
{
    shoal_errinfo ei;
    ei.msg[0] = 0;
    shoal_envelope *env = (shoal_envelope *)&ei; /* must be reset */
    shoal_err err = shoal_envelope_decode(codec, data, size, &env, &ei);
    if (err != SHOAL_OK) {
        if (err != SHOAL_EPROTO && err != SHOAL_ELIMIT && err != SHOAL_ENOMEM)
            abort();
        if (env != NULL || ei.msg[0] == 0)
            abort();
        if ((err == SHOAL_ELIMIT) != (size > codec->max_message_bytes))
            abort();
        /* errinfo is optional: the verdict is the same without it. */
        shoal_envelope *again = NULL;
        if (shoal_envelope_decode(codec, data, size, &again, NULL) != err || again)
            abort();
        return err;
    }
    if (!env || env->body_case == SHOAL__ENVELOPE__BODY__NOT_SET)
        abort();

    uint8_t *bytes = NULL;
    size_t len = 0;
    if (shoal_envelope_encode(codec, env, &bytes, &len, &ei) != SHOAL_OK)
        abort();
    /* Unknown fields are kept and re-encoded, so the re-encoding can only be
     * over the limit if the input was. */
    if (len > codec->max_message_bytes)
        abort();
    shoal_envelope *env2 = NULL;
    if (shoal_envelope_decode(codec, bytes, len, &env2, &ei) != SHOAL_OK)
        abort();
    uint8_t *bytes2 = NULL;
    size_t len2 = 0;
    if (shoal_envelope_encode(codec, env2, &bytes2, &len2, &ei) != SHOAL_OK)
        abort();
    if (len2 != len || memcmp(bytes, bytes2, len) != 0)
        abort();
    shoal_free(bytes2);
    shoal_free(bytes);
    shoal_envelope_free(env2);
    shoal_envelope_free(env);
    return SHOAL_OK;
}

static void check_allocation_failures(const shoal_codec *codec, const uint8_t *data, size_t size)
{
    shoal_failalloc_install(LONG_MAX);
    shoal_envelope *env = NULL;
    shoal_err counted = shoal_envelope_decode(codec, data, size, &env, NULL);
    shoal_envelope_free(env);
    const long allocations = shoal_failalloc_attempts();
    if (shoal_failalloc_live() != 0)
        abort();
    shoal_failalloc_uninstall();
    if (counted != SHOAL_OK && counted != SHOAL_EPROTO && counted != SHOAL_ELIMIT)
        abort();
    /* Every allocation for small decodes; an even sample of 64 for big ones
     * keeps the run fast. */
    const long step = allocations > 64 ? allocations / 64 : 1;
    for (long successes = 0; successes < allocations; successes += step) {
        shoal_failalloc_install(successes);
        shoal_errinfo ei;
        ei.msg[0] = 0;
        env = NULL;
        shoal_err err = shoal_envelope_decode(codec, data, size, &env, &ei);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        /* Only protobuf-c's unpack allocates, and it stops at the first
         * failure: every counted allocation failing means ENOMEM. */
        if (err != SHOAL_ENOMEM || env != NULL || live != 0 || ei.msg[0] == 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shoal_codec any = shoal_codec_defaults(SHOAL_PEER_ANY);
    shoal_codec device = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    shoal_codec server = shoal_codec_defaults(SHOAL_PEER_SERVER);
    shoal_codec small = shoal_codec_defaults(SHOAL_PEER_ANY);
    small.max_message_bytes = SMALL_LIMIT;

    shoal_err from_any = decode_checked(&any, data, size);
    shoal_err from_device = decode_checked(&device, data, size);
    shoal_err from_server = decode_checked(&server, data, size);
    shoal_err from_small = decode_checked(&small, data, size);

    /* A message both sides may send is accepted from both; a message
     * accepted from one side is accepted with no side given. */
    if ((from_device == SHOAL_OK || from_server == SHOAL_OK) && from_any != SHOAL_OK)
        abort();
    if (size <= SMALL_LIMIT && from_small != from_any)
        abort();

    uint32_t version = 0;
    shoal_err peek = shoal_envelope_unsupported_version(&any, data, size, &version);
    if (peek == SHOAL_OK && (from_any != SHOAL_EPROTO || (version >= 1 && version <= 1)))
        abort();
    if (peek != SHOAL_OK && peek != SHOAL_ENOTFOUND)
        abort();

    check_allocation_failures(&any, data, size);
    return 0;
}
