/* The porting layer and the client's argument checks, without a server. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal/client.h"
#include "shoal/port_posix.h"
#include "shoal/port_test.h"

Test(device_sdk_port, the_test_port_scripts_clock_random_and_charging)
{
    shoal_test_port tp;
    shoal_test_port_init(&tp);
    tp.monotonic_step_ms = 5;
    tp.charging_flip_after = 2;
    tp.charging_after = 0;
    shoal_port port;
    shoal_test_port_bind(&tp, &port);
    cr_assert_eq(shoal_port_check(&port, NULL), SHOAL_OK);
    cr_assert_eq(port.monotonic_ms(port.ctx), 1000);
    cr_assert_eq(port.monotonic_ms(port.ctx), 1005);
    cr_assert_eq(port.wall_ms(port.ctx), 1767225600000 + 1010);
    cr_assert_eq(port.charging(port.ctx), 1);
    cr_assert_eq(port.charging(port.ctx), 1);
    cr_assert_eq(port.charging(port.ctx), 0, "the third poll sees the flip");
    cr_assert_eq(tp.charging_polls, 3u);
    uint8_t a[13], b[13];
    cr_assert_eq(port.random(port.ctx, a, sizeof a), SHOAL_OK);
    shoal_test_port_bind(&tp, &port); /* reseeds */
    cr_assert_eq(port.random(port.ctx, b, sizeof b), SHOAL_OK);
    cr_assert_arr_eq(a, b, sizeof a, "same seed, same bytes");
    shoal_port_conn *conn = NULL;
    shoal_errinfo ei = {0};
    cr_assert_eq(port.connect(port.ctx, "example.org", 443, &conn, &ei), SHOAL_EIO);
    cr_assert_not_null(strstr(ei.msg, "no transport"), "%s", ei.msg);
    cr_assert_eq(tp.connects, 1u);
    shoal_test_port_fini(&tp);
}

static void write_file(const char *dir, const char *name, const char *attr, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/%s/%s", dir, name, attr);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(device_sdk_port, the_posix_port_reads_the_battery_from_sysfs_else_the_config)
{
    char dir[] = "/tmp/shoal-power-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    shoal_posix_port_config pc = {.power_supply_dir = dir,
                                  .battery_percent = 55,
                                  .charging = 1,
                                  .network = SHOAL_NET_METERED,
                                  .idle = 0};
    shoal_port port;
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_posix_port_init(&pc, &port, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_port_check(&port, NULL), SHOAL_OK);
    /* An empty directory: the config's values. */
    cr_assert_eq(port.battery_percent(port.ctx), 55);
    cr_assert_eq(port.charging(port.ctx), 1);
    cr_assert_eq(port.network(port.ctx), SHOAL_NET_METERED);
    cr_assert_eq(port.idle(port.ctx), 0);
    /* A discharging battery overrides them. */
    write_file(dir, "BAT0", "type", "Battery\n");
    write_file(dir, "BAT0", "capacity", "42\n");
    write_file(dir, "BAT0", "status", "Discharging\n");
    cr_assert_eq(port.battery_percent(port.ctx), 42);
    cr_assert_eq(port.charging(port.ctx), 0);
    write_file(dir, "BAT0", "status", "Charging\n");
    cr_assert_eq(port.charging(port.ctx), 1);
    shoal_posix_port_set(&port, 0, SHOAL_NET_UNMETERED, 1);
    cr_assert_eq(port.network(port.ctx), SHOAL_NET_UNMETERED);
    cr_assert_eq(port.idle(port.ctx), 1);
    int64_t t0 = port.monotonic_ms(port.ctx);
    cr_assert_geq(port.monotonic_ms(port.ctx), t0);
    cr_assert_gt(port.wall_ms(port.ctx), 1700000000000);
    uint8_t r1[32] = {0}, r2[32] = {0};
    cr_assert_eq(port.random(port.ctx, r1, sizeof r1), SHOAL_OK);
    cr_assert_eq(port.random(port.ctx, r2, sizeof r2), SHOAL_OK);
    cr_assert_neq(memcmp(r1, r2, sizeof r1), 0);
    /* Nothing listens on port 1 of loopback: the failure comes from send,
     * recv or connect, never a hang or a signal. */
    shoal_port_conn *conn = NULL;
    shoal_err err = port.connect(port.ctx, "127.0.0.1", 1, &conn, &ei);
    if (err == SHOAL_OK) {
        cr_assert_eq(port.wait(port.ctx, conn, 1, 2000), SHOAL_OK);
        uint8_t byte = 0;
        int n = port.send(port.ctx, conn, &byte, 1);
        cr_assert(n == SHOAL_PORT_IO_ERROR, "send after a refused connect gave %d", n);
        port.close(port.ctx, conn);
    } else {
        cr_assert_eq(err, SHOAL_EIO, "%s", ei.msg);
    }
    cr_assert_eq(port.connect(port.ctx, "no-such-host.invalid", 443, &conn, &ei), SHOAL_ENOTFOUND);
    shoal_posix_port_fini(&port);
    pc.battery_percent = 101;
    cr_assert_eq(shoal_posix_port_init(&pc, &port, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "battery_percent"), "%s", ei.msg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(device_sdk_client, misuse_returns_einval_with_a_message)
{
    shoal_test_port tp;
    shoal_test_port_init(&tp);
    shoal_port port;
    shoal_test_port_bind(&tp, &port);
    shoal_client_config cfg = {.host = "127.0.0.1",
                               .port = 8443,
                               .ca_pem = "-----BEGIN CERTIFICATE-----",
                               .population = "p",
                               .auth_token = (const uint8_t *)"token",
                               .store_path = "/tmp/none.db"};
    shoal_client *c = (shoal_client *)&cfg; /* must be overwritten with NULL */
    shoal_errinfo ei = {0};
    cr_assert_eq(shoal_client_new(NULL, &port, &c, &ei), SHOAL_EINVAL);
    cr_assert_null(c);
    cr_assert_eq(shoal_client_new(&cfg, NULL, &c, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_client_new(&cfg, &port, NULL, &ei), SHOAL_EINVAL);

    shoal_client_config bad = cfg;
    bad.population = NULL;
    cr_assert_eq(shoal_client_new(&bad, &port, &c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "population"), "%s", ei.msg);
    bad = cfg;
    bad.port = 0;
    cr_assert_eq(shoal_client_new(&bad, &port, &c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "port"), "%s", ei.msg);
    bad = cfg;
    bad.policy.min_battery_percent = 150;
    cr_assert_eq(shoal_client_new(&bad, &port, &c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "min_battery_percent"), "%s", ei.msg);
    bad = cfg;
    bad.fallback_retry_min_ms = 10;
    bad.fallback_retry_max_ms = 5;
    cr_assert_eq(shoal_client_new(&bad, &port, &c, &ei), SHOAL_EINVAL);

    shoal_port noclock = port;
    noclock.monotonic_ms = NULL;
    cr_assert_eq(shoal_client_new(&cfg, &noclock, &c, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "monotonic_ms"), "%s", ei.msg);

    cr_assert_eq(shoal_client_new(&cfg, &port, &c, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(NULL, &r), SHOAL_EINVAL);
    cr_assert_eq(shoal_client_run(c, NULL), SHOAL_EINVAL);
    cr_assert_eq(shoal_client_step(NULL, 0, &r), SHOAL_EINVAL);
    cr_assert_null(shoal_client_last_update(c, NULL));
    cr_assert_null(shoal_client_model(NULL, NULL));
    cr_assert_str_eq(shoal_session_outcome_name(SHOAL_SESSION_INTERRUPTED), "INTERRUPTED");
    cr_assert_str_eq(shoal_session_outcome_name((shoal_session_outcome)99), "?");
    shoal_client_free(c);
    shoal_client_free(NULL);
    shoal_test_port_fini(&tp);
}

Test(device_sdk_client, a_session_without_a_transport_fails_with_the_port_message)
{
    shoal_test_port tp;
    shoal_test_port_init(&tp);
    shoal_port port;
    shoal_test_port_bind(&tp, &port);
    shoal_client_config cfg = {.host = "127.0.0.1",
                               .port = 8443,
                               .ca_pem = "unused",
                               .population = "p",
                               .auth_token = (const uint8_t *)"token",
                               .store_path = "/tmp/none.db",
                               .fallback_retry_min_ms = 100,
                               .fallback_retry_max_ms = 100};
    shoal_client *c = NULL;
    cr_assert_eq(shoal_client_new(&cfg, &port, &c, NULL), SHOAL_OK);
    shoal_session_result r;
    cr_assert_eq(shoal_client_run(c, &r), SHOAL_OK);
    cr_assert_eq(r.outcome, SHOAL_SESSION_ERROR);
    cr_assert_eq(r.session_reason, SHOAL_SESSION_REASON_CONNECTION, "%s",
                 shoal_session_reason_name(r.session_reason));
    cr_assert_eq(r.err, SHOAL_EIO);
    cr_assert_not_null(strstr(r.errinfo.msg, "127.0.0.1:8443"), "%s", r.errinfo.msg);
    cr_assert_eq(r.next_checkin_ms, 100u, "a window of one point");
    shoal_client_free(c);
    shoal_test_port_fini(&tp);
}
