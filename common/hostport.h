/* hostport.h — one parser for HOST:PORT listen addresses, so every flag
 * that takes one (tconstd --listen --http-listen, tconst-worker --listen
 * --data-listen) refuses the same mistakes before anything starts: a port
 * that is not 0..65535 in plain digits (gRPC would wrap 99999 into a
 * random port), a missing port, an IPv6 address without brackets. */
#ifndef TC_HOSTPORT_H
#define TC_HOSTPORT_H

#include <stddef.h>

#include "status.h"

/* "host:port" or "[v6]:port" (host may be empty: every interface). On
 * success host and port hold the parts (port as its digits) and
 * *bracketed says the host was an IPv6 literal. Errors name the address. */
tc_status tc_hostport_split(const char *addr, char *host, size_t hcap, char *port, size_t pcap, int *bracketed);

/* the check of a listen flag: with grpc_schemes, gRPC's own address
 * forms (unix:, unix-abstract:, vsock:, any "scheme://") pass through;
 * anything else must split; the error starts with the flag's name */
tc_status tc_listen_addr_check(const char *flag, const char *addr, int grpc_schemes);

/* 1 when addr is a gRPC unix-socket address ("unix:PATH", "unix:///PATH")
 * on which a process accepts connections now: binding there would unlink
 * that server's socket and take its clients (gRPC removes an existing
 * file). 0 otherwise (no such file, a stale one, another scheme). */
int tc_unix_socket_live(const char *addr);

#endif
