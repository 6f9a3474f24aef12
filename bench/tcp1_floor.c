/* The floor of a one-query TCP connection on this machine: a server that does nothing but the
 * system calls every such connection needs (accept4, read the query, write a canned 2-byte-
 * prefixed reply of the same length class, epoll_ctl to wait for the client's FIN, read 0,
 * close), one thread on one epoll set with SO_REUSEPORT + TCP_NODELAY on the listener, as
 * meridian's TCP threads do. Run under the same load as the servers (bench/run.sh's tcp1 mode
 * or examples/tcp1perf) and compare CPU per connection: what is left above this is user space.
 *
 *   gcc -O2 -o /tmp/tcp1_floor bench/tcp1_floor.c && taskset -c 0 /tmp/tcp1_floor 5399
 *   taskset -c 1 target/release/examples/tcp1perf -s 127.0.0.1 -p 5399 -d queries.txt -l 10 -c 64
 *
 * The reply echoes the query with QR set (a valid DNS message the client accepts as answered).
 * Loopback only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 5399;
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(ls, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(ls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    unsigned char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    ssize_t r = read(c, buf, sizeof buf);
                    if (r > 4) { buf[4] |= 0x80; write(c, buf, r); }
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 4) { buf[4] |= 0x80; write(fd, buf, r); }
                else if (r == 0 || (r < 0 && errno != EAGAIN)) close(fd);
            }
        }
    }
}
