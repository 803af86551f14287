/* server_load: what its files share (see server_load.c for the modes and
 * the output). One file per job: server_load.c the options and main,
 * load_measure.c clocks, /proc figures and statistics, load_client.c the
 * TLS, WebSocket and protocol client side, load_hold.c, load_checkins.c,
 * load_round.c and load_handshakes.c the four modes. */
#ifndef SERVER_LOAD_H
#define SERVER_LOAD_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/encoding.h"
#include "shoal/envelope.h"
#include "shoal/rng.h"
#include "shoal/tls.h"
#include "shoal/wss.h"

typedef struct options {
    const char *mode;
    const char *host, *ca_file, *server_name, *population, *token, *server_log;
    uint16_t port;
    long server_pid;
    uint32_t connections, threads, hold_s;
    uint32_t seconds, reps;
    uint32_t devices, rounds;
    int64_t max_wait_ms;
    int threads_set;
} options;

/* CPU seconds of every thread of a process, from /proc/PID/task/TID/stat,
 * with the thread's name: which thread does the server's work. */
#define MAX_THREADS 64
typedef struct thread_cpu {
    int n;
    long tid[MAX_THREADS];
    char name[MAX_THREADS][20];
    double cpu_s[MAX_THREADS];
} thread_cpu;

typedef struct rawtls {
    int fd;
    shoal_tls *tls;
} rawtls;

typedef struct scrape {
    double connections, accepted, rejected, checked_in, reported, aggregation_s, model_version;
    double bytes_sent, bytes_received;
    double tls_handshakes, tls_resumed;
} scrape;

#define MAX_ROUNDS 64

/* The options (server_load.c parses them), the CA file's text and the
 * server's resolved address. */
extern options load_opt;
extern char *load_ca_pem;
extern struct sockaddr_storage load_server_addr;
extern socklen_t load_server_addr_len;

/* server_load.c */
void load_die(const char *fmt, const char *a);

/* load_measure.c */
int64_t load_mono_us(void);
int64_t load_real_us(void);
void load_sleep_ms(int64_t ms);
long load_proc_status_kib(long pid, const char *field);
double load_mib(long kib);
double load_proc_cpu_s(long pid);
double load_self_cpu_s(void);
long load_proc_fd_count(long pid);
void load_proc_threads(long pid, thread_cpu *out);
double load_print_thread_cpu(const char *mode, long pid, const thread_cpu *a, const thread_cpu *b);
double load_median(double *v, size_t n);
pthread_t load_spawn(void *(*fn)(void *), void *arg, size_t stack);

/* load_client.c */
void load_raw_close(rawtls *r);
shoal_err load_raw_open(rawtls *r, int timeout_ms, shoal_errinfo *ei);
/* The same asking for a session ticket (tickets non-zero) and offering
 * saved (shoal_tls_get_session's bytes; NULL for none). */
shoal_err load_raw_open_session(rawtls *r, int tickets, const uint8_t *saved, size_t saved_len,
                                int timeout_ms, shoal_errinfo *ei);
scrape load_metrics_scrape(void);
shoal_err load_wss_open(shoal_wss **out, int timeout_ms, shoal_errinfo *ei);
uint8_t *load_encode_checkin(const uint8_t *held, size_t held_len, size_t *len);
shoal_err load_send_env(shoal_wss *w, const shoal_envelope *env, int timeout_ms, shoal_errinfo *ei);
shoal_err load_recv_env(shoal_wss *w, int timeout_ms, shoal_envelope **out, shoal_errinfo *ei);
void load_wss_end(shoal_wss *w);

/* load_hold.c */
int load_run_hold(void);

/* load_checkins.c */
int load_run_checkins(void);

/* load_round.c */
int load_run_round(void);

/* load_handshakes.c */
int load_run_handshakes(void);

#endif
