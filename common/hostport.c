/* hostport.c — see hostport.h */
#include "hostport.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tc_status tc_hostport_split(const char *addr, char *host, size_t hcap, char *port, size_t pcap, int *bracketed) {
    const char *p, *orig = addr;
    size_t hl;
    *bracketed = 0;
    if (!addr || !*addr) return TC_FAIL(TC_ERR_INVALID, "address is empty (want HOST:PORT)");
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':') return TC_FAIL(TC_ERR_INVALID, "address \"%s\": want [IPV6]:PORT", addr);
        hl = (size_t)(rb - addr - 1);
        *bracketed = 1;
        if (hl == 0) return TC_FAIL(TC_ERR_INVALID, "address \"%s\": empty IPv6 address", addr);
        p = addr + 1;
        addr = rb + 2; /* the port */
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon) return TC_FAIL(TC_ERR_INVALID, "address \"%s\": no port (want HOST:PORT)", addr);
        if (memchr(addr, ':', (size_t)(colon - addr)))
            return TC_FAIL(TC_ERR_INVALID, "address \"%s\": put an IPv6 address in brackets, [::1]:%s", addr,
                           colon + 1);
        hl = (size_t)(colon - addr);
        p = addr;
        addr = colon + 1;
    }
    if (hl >= hcap) return TC_FAIL(TC_ERR_INVALID, "address \"%s\": host part too long", orig);
    memcpy(host, p, hl);
    host[hl] = '\0';
    const size_t pl = strlen(addr);
    if (pl == 0 || pl > 5 || pl >= pcap || strspn(addr, "0123456789") != pl || atoi(addr) > 65535)
        return TC_FAIL(TC_ERR_INVALID, "address \"%s\": port \"%s\" is not a number in 0..65535", orig, addr);
    memcpy(port, addr, pl + 1);
    return TC_OK;
}

tc_status tc_listen_addr_check(const char *flag, const char *addr, int grpc_schemes) {
    static const char *schemes[] = {"unix:", "unix-abstract:", "vsock:"};
    for (size_t i = 0; grpc_schemes && i < sizeof schemes / sizeof schemes[0]; i++)
        if (!strncmp(addr, schemes[i], strlen(schemes[i]))) return TC_OK;
    if (grpc_schemes && strstr(addr, "://")) return TC_OK;
    char host[256], port[8];
    int br;
    if (tc_hostport_split(addr, host, sizeof host, port, sizeof port, &br) != TC_OK) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", tc_error_get());
        return TC_FAIL(TC_ERR_INVALID, "%s: %s", flag, msg);
    }
    return TC_OK;
}

int tc_unix_socket_live(const char *addr) {
    if (strncmp(addr, "unix:", 5) != 0) return 0;
    const char *path = addr + 5;
    if (!strncmp(path, "//", 2)) path += 2; /* unix:///abs -> /abs */
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof sa.sun_path) return 0;
    memcpy(sa.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return 0;
    /* only "nobody there" means stale; anything else (a full backlog:
     * EAGAIN, no permission: EACCES) may be a live server's socket */
    int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 || (errno != ECONNREFUSED && errno != ENOENT);
    close(fd);
    return live;
}
