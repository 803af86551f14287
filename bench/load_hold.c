/* server_load hold: N concurrent sessions waiting in selection. */
#include "server_load.h"

/* ---- hold --------------------------------------------------------------------------- */

typedef struct hold_shared {
    shoal_wss **conns;
    const uint8_t *checkin;
    size_t checkin_len;
    atomic_uint failed, opened;
    atomic_uint_least64_t connect_us_sum;
    uint32_t threads;
    pthread_mutex_t mark_lock; /* progress lines */
    double mark_cpu;
    int64_t mark_t;
} hold_shared;

typedef struct hold_worker {
    hold_shared *sh;
    uint32_t index;
} hold_worker;

static void *hold_open_main(void *arg)
{
    hold_worker *hw = arg;
    hold_shared *sh = hw->sh;
    for (uint32_t i = hw->index; i < load_opt.connections; i += sh->threads) {
        shoal_errinfo ei = {0};
        shoal_wss *w = NULL;
        int64_t t0 = load_mono_us();
        shoal_err err = load_wss_open(&w, 60000, &ei);
        if (!err) {
            atomic_fetch_add(&sh->connect_us_sum, (uint64_t)(load_mono_us() - t0));
            err = shoal_wss_send(w, sh->checkin, sh->checkin_len, 30000, &ei);
            if (err) {
                shoal_wss_free(w);
                w = NULL;
            }
        }
        if (err) {
            if (atomic_fetch_add(&sh->failed, 1) < 5)
                fprintf(stderr, "server_load: hold: connection %u: %s\n", i, ei.msg);
            continue;
        }
        sh->conns[i] = w;
        unsigned n = atomic_fetch_add(&sh->opened, 1) + 1;
        if (n % 1000 == 0) {
            /* Server CPU per thousand new sessions: constant unless something
             * costs more as sessions accumulate. */
            pthread_mutex_lock(&sh->mark_lock);
            double cpu = load_proc_cpu_s(load_opt.server_pid);
            int64_t now = load_mono_us();
            printf("hold: %5u sessions open: the last 1000 took %.2f s, %.2f s of server CPU\n", n,
                   (double)(now - sh->mark_t) / 1e6, cpu - sh->mark_cpu);
            sh->mark_cpu = cpu;
            sh->mark_t = now;
            pthread_mutex_unlock(&sh->mark_lock);
        }
    }
    return NULL;
}

static void *hold_close_main(void *arg)
{
    hold_worker *hw = arg;
    for (uint32_t i = hw->index; i < load_opt.connections; i += hw->sh->threads) {
        load_wss_end(hw->sh->conns[i]);
        hw->sh->conns[i] = NULL;
    }
    return NULL;
}

int load_run_hold(void)
{
    long pid = load_opt.server_pid;
    size_t checkin_len = 0;
    uint8_t *checkin = load_encode_checkin(NULL, 0, &checkin_len);
    scrape before = load_metrics_scrape();
    long idle_rss = load_proc_status_kib(pid, "VmRSS"),
         idle_hwm = load_proc_status_kib(pid, "VmHWM");
    long client_idle_rss = load_proc_status_kib(0, "VmRSS");
    printf("hold: server pid %ld idle: VmRSS %.1f MiB, VmHWM %.1f MiB, %.0f connections\n", pid,
           load_mib(idle_rss), load_mib(idle_hwm), before.connections);

    hold_shared sh;
    memset(&sh, 0, sizeof sh);
    sh.conns = calloc(load_opt.connections, sizeof *sh.conns);
    sh.checkin = checkin;
    sh.checkin_len = checkin_len;
    sh.threads = load_opt.threads;
    hold_worker *hw = calloc(load_opt.threads, sizeof *hw);
    pthread_t *th = calloc(load_opt.threads, sizeof *th);
    if (!sh.conns || !hw || !th)
        load_die("%s", "out of memory");
    thread_cpu tc0, tc1;
    load_proc_threads(pid, &tc0);
    double server_cpu0 = load_proc_cpu_s(pid), client_cpu0 = load_self_cpu_s();
    int64_t t0 = load_mono_us();
    pthread_mutex_init(&sh.mark_lock, NULL);
    sh.mark_cpu = server_cpu0;
    sh.mark_t = t0;
    for (uint32_t i = 0; i < load_opt.threads; i++) {
        hw[i] = (hold_worker){.sh = &sh, .index = i};
        th[i] = load_spawn(hold_open_main, &hw[i], 256 * 1024);
    }
    for (uint32_t i = 0; i < load_opt.threads; i++)
        pthread_join(th[i], NULL);
    double open_s = (double)(load_mono_us() - t0) / 1e6;
    unsigned opened = atomic_load(&sh.opened), failed = atomic_load(&sh.failed);
    double server_cpu_open = load_proc_cpu_s(pid) - server_cpu0;
    double client_cpu_open = load_self_cpu_s() - client_cpu0;
    printf("hold: %u of %u sessions opened in %.1f s (%.0f/s, %u threads), %u failed; mean "
           "connect %.1f ms; CPU: server %.1f s, client %.1f s\n",
           opened, load_opt.connections, open_s, opened / open_s, load_opt.threads, failed,
           opened ? (double)atomic_load(&sh.connect_us_sum) / opened / 1000.0 : NAN,
           server_cpu_open, client_cpu_open);
    load_proc_threads(pid, &tc1);
    double service_open = load_print_thread_cpu("hold", pid, &tc0, &tc1);

    /* Every CheckIn sent must have reached selection. */
    scrape s = before;
    int64_t wait_until = load_mono_us() + 60 * 1000000LL;
    do {
        load_sleep_ms(250);
        s = load_metrics_scrape();
    } while (!(s.accepted - before.accepted >= opened) && load_mono_us() < wait_until);
    double accepted = s.accepted - before.accepted;
    double settle_s = (double)(load_mono_us() - t0) / 1e6 - open_s;

    long rss = load_proc_status_kib(pid, "VmRSS"), hwm = load_proc_status_kib(pid, "VmHWM");
    long threads = load_proc_status_kib(pid, "Threads"), fds = load_proc_fd_count(pid);
    long crss = load_proc_status_kib(0, "VmRSS");
    double conns_min = s.connections, conns_max = s.connections;
    long rss_max = rss, crss_max = crss;
    printf("hold: %.0f accepted into selection (%.1f s after the last connect); server: "
           "shoal_connections %.0f (this scrape included), VmRSS %.1f MiB, VmHWM %.1f MiB, %ld "
           "threads, %ld fds; client VmRSS %.1f MiB\n",
           accepted, settle_s, s.connections, load_mib(rss), load_mib(hwm), threads, fds,
           load_mib(crss));

    for (uint32_t sec = 0; sec < load_opt.hold_s; sec++) {
        load_sleep_ms(1000);
        scrape h = load_metrics_scrape();
        long r = load_proc_status_kib(pid, "VmRSS"), c = load_proc_status_kib(0, "VmRSS");
        if (r > rss_max)
            rss_max = r;
        if (c > crss_max)
            crss_max = c;
        if (h.connections < conns_min)
            conns_min = h.connections;
        if (h.connections > conns_max)
            conns_max = h.connections;
    }
    /* A session that was answered (rejected, aborted) or closed is not being
     * held: look for anything that arrived. */
    unsigned answered = 0, lost = 0;
    for (uint32_t i = 0; i < load_opt.connections; i++) {
        if (!sh.conns[i])
            continue;
        uint8_t *msg = NULL;
        size_t len = 0;
        shoal_errinfo ei = {0};
        shoal_err err = shoal_wss_recv(sh.conns[i], &msg, &len, 0, &ei);
        if (err == SHOAL_OK)
            answered++;
        else if (err != SHOAL_ETIMEDOUT)
            lost++;
        shoal_free(msg);
    }
    long hwm_held = load_proc_status_kib(pid, "VmHWM");
    printf("hold: held %u s: shoal_connections %.0f..%.0f, server VmRSS max %.1f MiB, client "
           "VmRSS max %.1f MiB; sessions answered early %u, closed %u\n",
           load_opt.hold_s, conns_min, conns_max, load_mib(rss_max), load_mib(crss_max), answered,
           lost);

    t0 = load_mono_us();
    for (uint32_t i = 0; i < load_opt.threads; i++)
        th[i] = load_spawn(hold_close_main, &hw[i], 256 * 1024);
    for (uint32_t i = 0; i < load_opt.threads; i++)
        pthread_join(th[i], NULL);
    double close_s = (double)(load_mono_us() - t0) / 1e6;
    wait_until = load_mono_us() + 60 * 1000000LL;
    scrape after;
    do {
        load_sleep_ms(250);
        after = load_metrics_scrape();
    } while (!(after.connections <= before.connections) && load_mono_us() < wait_until);
    load_sleep_ms(1000);
    long rss_after = load_proc_status_kib(pid, "VmRSS");
    printf("hold: closed in %.1f s; server afterwards: shoal_connections %.0f, VmRSS %.1f MiB\n",
           close_s, after.connections, load_mib(rss_after));

    double per_session_kib = opened ? (double)(rss_max - idle_rss) / opened : NAN;
    printf("hold: server memory per held session %.1f KiB (VmRSS held - idle) / sessions; client "
           "%.1f KiB\n",
           per_session_kib, opened ? (double)(crss_max - client_idle_rss) / opened : NAN);
    printf("RESULT hold.sessions_requested %u\n", load_opt.connections);
    printf("RESULT hold.sessions_opened %u\n", opened);
    printf("RESULT hold.sessions_failed %u\n", failed);
    printf("RESULT hold.accepted %.0f\n", accepted);
    printf("RESULT hold.answered_early %u\n", answered);
    printf("RESULT hold.closed_early %u\n", lost);
    printf("RESULT hold.open_s %.2f\n", open_s);
    printf("RESULT hold.open_per_s %.0f\n", opened / open_s);
    printf("RESULT hold.connections_metric_min %.0f\n", conns_min);
    printf("RESULT hold.server_rss_idle_mib %.1f\n", load_mib(idle_rss));
    printf("RESULT hold.server_rss_held_mib %.1f\n", load_mib(rss_max));
    printf("RESULT hold.server_hwm_mib %.1f\n", load_mib(hwm_held));
    printf("RESULT hold.server_rss_after_close_mib %.1f\n", load_mib(rss_after));
    printf("RESULT hold.server_kib_per_session %.1f\n", per_session_kib);
    printf("RESULT hold.server_threads %ld\n", threads);
    printf("RESULT hold.server_fds %ld\n", fds);
    printf("RESULT hold.client_rss_mib %.1f\n", load_mib(crss_max));
    printf("RESULT hold.server_cpu_open_s %.1f\n", server_cpu_open);
    printf("RESULT hold.client_cpu_open_s %.1f\n", client_cpu_open);
    printf("RESULT hold.server_service_thread_cpu_open_s %.1f\n", service_open);
    free(sh.conns);
    free(hw);
    free(th);
    shoal_free(checkin);
    return opened == load_opt.connections && accepted >= opened && !answered && !lost ? 0 : 1;
}
