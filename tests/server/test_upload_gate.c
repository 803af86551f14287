/* The upload gate: at most `max` uploads at once, the others admitted in
 * the order they started as places free up; a connection that leaves the
 * queue takes no place and passes none on. */
#include <criterion/criterion.h>

#include "upload_gate.h"

static void counts(upload_gate *g, uint32_t active, size_t waiting)
{
    uint32_t a;
    size_t w;
    shoal_upload_gate_counts(g, &a, &w);
    cr_assert_eq(a, active, "active %u, want %u", a, active);
    cr_assert_eq(w, waiting, "waiting %zu, want %zu", w, waiting);
}

Test(server_upload_gate, places_pass_on_in_arrival_order)
{
    upload_gate g;
    cr_assert_eq(shoal_upload_gate_init(&g, 2), SHOAL_OK);
    int q = -1;
    cr_assert_eq(shoal_upload_gate_enter(&g, 1), GATE_ADMITTED);
    cr_assert_eq(shoal_upload_gate_enter(&g, 2), GATE_ADMITTED);
    cr_assert_eq(shoal_upload_gate_enter(&g, 3), GATE_WAITING);
    cr_assert_eq(shoal_upload_gate_enter(&g, 4), GATE_WAITING);
    cr_assert_eq(shoal_upload_gate_enter(&g, 5), GATE_WAITING);
    counts(&g, 2, 3);
    /* 4 gives up while queued: no place taken, none passed on. */
    cr_assert_eq(shoal_upload_gate_leave(&g, 4, GATE_WAITING, &q), 0u);
    cr_assert_eq(q, 1);
    counts(&g, 2, 2);
    /* 1 ends: its place goes to 3 (first in line), then 2's to 5. */
    cr_assert_eq(shoal_upload_gate_leave(&g, 1, GATE_ADMITTED, &q), 3u);
    cr_assert_eq(q, 0);
    counts(&g, 2, 1);
    cr_assert_eq(shoal_upload_gate_leave(&g, 2, GATE_ADMITTED, NULL), 5u);
    counts(&g, 2, 0);
    /* 3 was admitted by a pop: it holds a place though it entered waiting. */
    cr_assert_eq(shoal_upload_gate_leave(&g, 3, GATE_WAITING, &q), 0u);
    cr_assert_eq(q, 0);
    counts(&g, 1, 0);
    cr_assert_eq(shoal_upload_gate_leave(&g, 5, GATE_WAITING, &q), 0u);
    counts(&g, 0, 0);
    cr_assert_eq(shoal_upload_gate_leave(&g, 9, GATE_NONE, &q), 0u);
    counts(&g, 0, 0);
    cr_assert_eq(atomic_load(&g.waited_total), 3u);
    shoal_upload_gate_fini(&g);
}

/* Many waiting: the ring grows and wraps, order is kept. */
Test(server_upload_gate, a_long_queue_keeps_its_order)
{
    upload_gate g;
    cr_assert_eq(shoal_upload_gate_init(&g, 1), SHOAL_OK);
    cr_assert_eq(shoal_upload_gate_enter(&g, 1000), GATE_ADMITTED);
    shoal_conn_id holder = 1000;
    for (shoal_conn_id round = 0; round < 3; round++) {
        for (shoal_conn_id id = 1; id <= 300; id++)
            cr_assert_eq(shoal_upload_gate_enter(&g, round * 1000 + id + 2000), GATE_WAITING);
        for (shoal_conn_id id = 1; id <= 300; id++) {
            shoal_conn_id next = shoal_upload_gate_leave(&g, holder, GATE_ADMITTED, NULL);
            cr_assert_eq(next, round * 1000 + id + 2000);
            holder = next;
        }
    }
    counts(&g, 1, 0);
    cr_assert_eq(shoal_upload_gate_leave(&g, holder, GATE_ADMITTED, NULL), 0u);
    counts(&g, 0, 0);
    shoal_upload_gate_fini(&g);
}

Test(server_upload_gate, no_limit_admits_everyone)
{
    upload_gate g;
    cr_assert_eq(shoal_upload_gate_init(&g, 0), SHOAL_OK);
    for (shoal_conn_id id = 1; id <= 1000; id++)
        cr_assert_eq(shoal_upload_gate_enter(&g, id), GATE_ADMITTED);
    counts(&g, 1000, 0);
    shoal_upload_gate_fini(&g);
}
