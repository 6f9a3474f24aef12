/* The kernel's floor under a health probe on loopback: what one probe costs the thread that
 * makes it when user space costs next to nothing. A C client makes N probes one after the
 * other, blocking, as the prober makes them (new connection, reset on close: SO_LINGER 0):
 *
 *   connect  socket, connect, close (the `tcp://` check)
 *   http     socket, connect, write a request, read the response head, close (an `http://`
 *            check answered "200 ok", as benches/probe_cpu.rs's server answers)
 *
 * against a server in the same process (a few threads each blocking in accept on one
 * listener, so no thread is made per connection). Prints the client thread's CPU per probe
 * (RUSAGE_THREAD: user + system), which on loopback includes the kernel's work for the
 * server's half of each handshake (the receive path runs in the sender's context), as the
 * prober thread's figure in probe_cpu does, and what 10,000 probes a second would cost at
 * that rate.
 *
 *   gcc -O2 -pthread -o /tmp/probe_floor bench/probe_floor.c
 *   /tmp/probe_floor http 100000      # or: connect 100000
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int lfd;
static const char REQ[] =
    "GET /s1/e1 HTTP/1.1\r\nUser-Agent: meridian health-check\r\nAccept: */*\r\n"
    "Host: 127.0.0.1:8080\r\nConnection: close\r\n\r\n";
static const char RESP[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    "Connection: close\r\n\r\nok";

static void *serve(void *arg) {
    (void)arg;
    char buf[2048];
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        size_t have = 0;
        for (;;) {
            ssize_t n = read(c, buf + have, sizeof buf - 1 - have);
            if (n <= 0)
                break;
            have += (size_t)n;
            buf[have] = 0;
            if (strstr(buf, "\r\n\r\n")) {
                (void)!write(c, RESP, sizeof RESP - 1);
                break;
            }
            if (have >= sizeof buf - 1)
                break;
        }
        close(c);
    }
    return NULL;
}

static double thread_cpu_us(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static double thread_sys_us(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    int http = argc > 1 && strcmp(argv[1], "http") == 0;
    long n = argc > 2 ? atol(argv[2]) : 100000;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 4096)) {
        perror("listen");
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        pthread_create(&t, NULL, serve, NULL);
    }
    struct linger lin = {.l_onoff = 1, .l_linger = 0};
    char buf[512];
    long fails = 0;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    double c0 = thread_cpu_us(), s0 = thread_sys_us();
    for (long i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) {
            fails++;
            close(s);
            continue;
        }
        if (http) {
            if (write(s, REQ, sizeof REQ - 1) != (ssize_t)(sizeof REQ - 1))
                fails++;
            else if (read(s, buf, sizeof buf) < 12 || memcmp(buf, "HTTP/1.1 200", 12))
                fails++;
        }
        close(s);
    }
    double cpu = thread_cpu_us() - c0, sys = thread_sys_us() - s0;
    clock_gettime(CLOCK_MONOTONIC, &w1);
    double wall = (w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) / 1e9;
    printf("%s: %ld probes (%ld failed) in %.2f s; client thread %.1f us CPU per probe "
           "(%.0f %% kernel) -> %.1f %% of a core at 10,000 probes/s\n",
           http ? "http" : "connect", n, fails, wall, cpu / n, 100.0 * sys / cpu,
           cpu / n * 10000 / 1e6 * 100);
    return fails != 0;
}
