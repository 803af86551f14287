/* Valid messages of every kind, built in caller-owned storage, for the
 * protocol tests and fuzz corpus checks. Each fx_* function fills `f` with
 * one valid Envelope (f->env) whose sub-messages live in `f`; tests then
 * break one field and check the refusal. */
#ifndef SHOAL_TEST_PROTOCOL_FIXTURES_H
#define SHOAL_TEST_PROTOCOL_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/envelope.h"

typedef struct fixture {
    Shoal__Envelope env;
    Shoal__CheckIn check_in;
    Shoal__Capabilities caps;
    Shoal__Resume resume;
    Shoal__TensorEncoding encodings[3];
    Shoal__CheckInResult result;
    Shoal__CheckInResult__Accepted accepted;
    Shoal__CheckInResult__Rejected rejected;
    Shoal__Plan plan;
    Shoal__ModelSpec model;
    uint32_t input_shape[3];
    Shoal__ClientOptimizer optimizer;
    Shoal__ExampleSelector selector;
    Shoal__Limits limits;
    Shoal__UpdateBound update_bound;
    Shoal__RetryWindow window;
    Shoal__ModelChunk model_chunk;
    Shoal__ReportChunk report_chunk;
    uint8_t chunk_data[16];
    Shoal__Report report;
    Shoal__TensorInfo update;
    Shoal__Metric metric_storage[2];
    Shoal__Metric *metrics[2];
    Shoal__ReportAck ack;
    Shoal__Abort abort_msg;
    Shoal__VersionMismatch version;
} fixture;

void fx_check_in(fixture *f);
void fx_accepted(fixture *f);
void fx_rejected(fixture *f);
void fx_model_chunk(fixture *f);
void fx_report_chunk(fixture *f);
void fx_report(fixture *f);
void fx_report_ack(fixture *f);
void fx_abort(fixture *f);

/* Packs f->env without validation (protobuf-c directly), into a new
 * malloc'd buffer; for feeding invalid messages to the decoder. */
uint8_t *fx_pack_raw(const Shoal__Envelope *env, size_t *len);

/* Asserts that `msg` is refused with exactly `expected` on all three paths:
 * shoal_envelope_check (SHOAL_EPROTO), shoal_envelope_encode (SHOAL_EINVAL,
 * nothing allocated) and shoal_envelope_decode of the message packed
 * without validation (SHOAL_EPROTO, no envelope). */
void fx_expect_refused(const Shoal__Envelope *msg, shoal_peer sender, const char *expected);

#endif
